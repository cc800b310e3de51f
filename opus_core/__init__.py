"""opus: a local-first task processing engine built as a pluggy plugin framework.

The public API: manifest tasks (`Task`, `TaskProcessor`, `Tasks`), function
tasks (`task`), the stores (`KeyValueStore`, `StatePersistence`), logging
(`LoggerWrapper`), reports (`RunReport`), plugins (`hookimpl`, `hookspecs`)
and errors (`OpusError` and its subclasses).

Names are imported on first use, so `import opus_core` (and `opus --help`)
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opus_core.version import __version__

_EXPORTS = {
    "task": "opus_core.decorator",
    "Tasks": "opus_core.engine",
    "ConfigError": "opus_core.errors",
    "CycleError": "opus_core.errors",
    "DependencyError": "opus_core.errors",
    "ManifestError": "opus_core.errors",
    "MissingValueError": "opus_core.errors",
    "OpusError": "opus_core.errors",
    "PluginError": "opus_core.errors",
    "ProcessDiedError": "opus_core.errors",
    "RemoteTaskError": "opus_core.errors",
    "RunFailedError": "opus_core.errors",
    "TaskCancelledError": "opus_core.errors",
    "TaskTimeoutError": "opus_core.errors",
    "hookimpl": "opus_core.plugin",
    "LoggerWrapper": "opus_core.logger",
    "Task": "opus_core.manifest",
    "StatePersistance": "opus_core.persistence",
    "StatePersistence": "opus_core.persistence",
    "TaskProcessor": "opus_core.processor",
    "RunReport": "opus_core.report",
    "TaskResult": "opus_core.report",
    "TaskStatus": "opus_core.report",
    "BaseTaskRun": "opus_core.runners",
    "MultiprocessTaskRun": "opus_core.runners",
    "SequentialTaskRun": "opus_core.runners",
    "KeyValueStore": "opus_core.store",
}

__all__ = [
    "BaseTaskRun",
    "ConfigError",
    "CycleError",
    "DependencyError",
    "KeyValueStore",
    "LoggerWrapper",
    "ManifestError",
    "MissingValueError",
    "MultiprocessTaskRun",
    "OpusError",
    "PluginError",
    "ProcessDiedError",
    "RemoteTaskError",
    "RunFailedError",
    "RunReport",
    "SequentialTaskRun",
    "StatePersistance",
    "StatePersistence",
    "Task",
    "TaskCancelledError",
    "TaskProcessor",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Tasks",
    "__version__",
    "hookimpl",
    "hookspecs",
    "task",
]


def __getattr__(name: str) -> Any:
    if name == "hookspecs":
        return importlib.import_module("opus_core.hookspecs")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'opus_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from opus_core import hookspecs
    from opus_core.decorator import task
    from opus_core.engine import Tasks
    from opus_core.errors import (
        ConfigError,
        CycleError,
        DependencyError,
        ManifestError,
        MissingValueError,
        OpusError,
        PluginError,
        ProcessDiedError,
        RemoteTaskError,
        RunFailedError,
        TaskCancelledError,
        TaskTimeoutError,
    )
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistance, StatePersistence
    from opus_core.plugin import hookimpl
    from opus_core.processor import TaskProcessor
    from opus_core.report import RunReport, TaskResult, TaskStatus
    from opus_core.runners import BaseTaskRun, MultiprocessTaskRun, SequentialTaskRun
    from opus_core.store import KeyValueStore
