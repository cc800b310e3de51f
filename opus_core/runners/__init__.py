"""Runners: where tasks run. See `Runner` to write your own (docs/runners.md).

A runner's `submit` receives a `Work` (call it to do the task; its fields say which
task it is) and returns a `BaseTaskRun` whose `finish` it calls when the work ends and
whose `halt` stops the work. `opus_core.runners.remote` sends work to another process
and its outcome, traceback included, back.

Built in: `SequentialRunner` (`"sequential"`), `ProcessRunner` (`"process"`) and
`ProcessPoolRunner` (`"processpool"`).
Plugins add more (`threadpool`, `dask`, ...) through `opus_register_runners`.

Names are imported on first use: a plugin that subclasses `Runner` does not
pay for the process runner at `opus --help`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BaseTaskRun": "opus_core.runners.base",
    "HALT_GRACE": "opus_core.runners.base",
    "Runner": "opus_core.runners.base",
    "Work": "opus_core.runners.work",
    "wait_for_halts": "opus_core.runners.base",
    "MultiprocessTaskRun": "opus_core.runners.process",
    "ProcessRunner": "opus_core.runners.process",
    "PoolTaskRun": "opus_core.runners.processpool",
    "ProcessPoolRunner": "opus_core.runners.processpool",
    "SequentialRunner": "opus_core.runners.sequential",
    "SequentialTaskRun": "opus_core.runners.sequential",
    "BUILTIN_RUNNERS": "opus_core.runners.resolve",
    "RunnerSpec": "opus_core.runners.resolve",
    "resolve_runner": "opus_core.runners.resolve",
}

__all__ = [
    "BUILTIN_RUNNERS",
    "HALT_GRACE",
    "BaseTaskRun",
    "MultiprocessTaskRun",
    "PoolTaskRun",
    "ProcessPoolRunner",
    "ProcessRunner",
    "Runner",
    "RunnerSpec",
    "SequentialRunner",
    "SequentialTaskRun",
    "Work",
    "resolve_runner",
    "wait_for_halts",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'opus_core.runners' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from opus_core.runners.base import HALT_GRACE, BaseTaskRun, Runner, wait_for_halts
    from opus_core.runners.process import MultiprocessTaskRun, ProcessRunner
    from opus_core.runners.processpool import PoolTaskRun, ProcessPoolRunner
    from opus_core.runners.resolve import BUILTIN_RUNNERS, RunnerSpec, resolve_runner
    from opus_core.runners.sequential import SequentialRunner, SequentialTaskRun
    from opus_core.runners.work import Work
