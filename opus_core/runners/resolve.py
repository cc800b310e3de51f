"""`runner=`: turning a runner name, class or instance into the runner that runs a graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opus_core.errors import ConfigError
from opus_core.runners.base import BaseTaskRun, Runner
from opus_core.runners.process import MultiprocessTaskRun, ProcessRunner
from opus_core.runners.processpool import ProcessPoolRunner
from opus_core.runners.sequential import SequentialRunner, SequentialTaskRun

BUILTIN_RUNNERS: dict[str, type[Runner]] = {
    SequentialRunner.name: SequentialRunner,
    ProcessRunner.name: ProcessRunner,
    ProcessPoolRunner.name: ProcessPoolRunner,
}

RunnerSpec = str | Runner | type[Runner] | type[BaseTaskRun]
"""What `runner=` accepts: a name, a runner, a runner class, or a seed run class."""


def resolve_runner(
    spec: RunnerSpec, available: Mapping[str, type[Runner]] | None = None, **options: Any
) -> Runner:
    """Turn a `runner=` value into a runner instance.

    Names are looked up in `available` (default: the built-in runners); a class
    is instantiated with `options`; an instance is returned as it is.
    """
    if isinstance(spec, Runner):
        return spec
    if isinstance(spec, type):
        if issubclass(spec, SequentialTaskRun):
            return SequentialRunner()
        if issubclass(spec, MultiprocessTaskRun):
            return ProcessRunner()
        if issubclass(spec, Runner):
            return spec(**options)
    if isinstance(spec, str):
        runners = BUILTIN_RUNNERS if available is None else available
        try:
            cls = runners[spec]
        except KeyError:
            known = ", ".join(sorted(runners)) or "none"
            raise ConfigError(f"unknown runner {spec!r}; installed runners: {known}") from None
        return cls(**options)
    raise ConfigError(
        "runner must be a runner name, a Runner instance or class, "
        f"SequentialTaskRun or MultiprocessTaskRun; got {spec!r}"
    )
