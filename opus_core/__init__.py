"""opus: a local-first task processing engine built as a pluggy plugin framework.

The public API: manifest tasks (`Task`, `TaskProcessor`, `Tasks`), function
tasks (`task`), the stores (`KeyValueStore`, `StatePersistence`), logging
(`LoggerWrapper`), reports (`RunReport`), plugins (`hookimpl`, `hookspecs`,
`PLUGIN_API`, the plugin API version) and errors (`OpusError` and its subclasses).

Names are imported on first use, so `import opus_core` (and `opus --help`)
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opus_core.version import PLUGIN_API, __version__

_EXPORTS = {
    "task": "opus_core.functions.decorator",
    "ALL_COMPLETED": "opus_core.functions.waiting",
    "FIRST_COMPLETED": "opus_core.functions.waiting",
    "FIRST_EXCEPTION": "opus_core.functions.waiting",
    "RunList": "opus_core.functions.mapping",
    "TaskFunction": "opus_core.functions.decorator",
    "as_completed": "opus_core.functions.waiting",
    "unmapped": "opus_core.functions.mapping",
    "wait": "opus_core.functions.waiting",
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
    "TaskFailedError": "opus_core.errors",
    "TaskTimeoutError": "opus_core.errors",
    "UpstreamFailedError": "opus_core.errors",
    "hookimpl": "opus_core.plugin",
    "LoggerWrapper": "opus_core.logger",
    "Task": "opus_core.manifest",
    "StatePersistance": "opus_core.persistence",
    "StatePersistence": "opus_core.persistence",
    "TaskProcessor": "opus_core.processor",
    "RunReport": "opus_core.results",
    "TaskResult": "opus_core.results",
    "TaskStatus": "opus_core.results",
    "BaseTaskRun": "opus_core.runners",
    "MultiprocessTaskRun": "opus_core.runners",
    "SequentialTaskRun": "opus_core.runners",
    "KeyValueStore": "opus_core.store",
    "project_folder": "opus_core.config",
}

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "PLUGIN_API",
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
    "RunList",
    "RunReport",
    "SequentialTaskRun",
    "StatePersistance",
    "StatePersistence",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskFunction",
    "TaskProcessor",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Tasks",
    "UpstreamFailedError",
    "__version__",
    "as_completed",
    "hookimpl",
    "hookspecs",
    "project_folder",
    "task",
    "unmapped",
    "wait",
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
    from opus_core.config import project_folder
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
        TaskFailedError,
        TaskTimeoutError,
        UpstreamFailedError,
    )
    from opus_core.functions.decorator import TaskFunction, task
    from opus_core.functions.mapping import RunList, unmapped
    from opus_core.functions.waiting import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        as_completed,
        wait,
    )
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistance, StatePersistence
    from opus_core.plugin import hookimpl
    from opus_core.processor import TaskProcessor
    from opus_core.results import RunReport, TaskResult, TaskStatus
    from opus_core.runners import BaseTaskRun, MultiprocessTaskRun, SequentialTaskRun
    from opus_core.store import KeyValueStore
