"""opus: a local-first task processing engine built as a pluggy plugin framework.

The public API: manifest tasks (`Task`, `TaskProcessor`, `Tasks`), function
tasks (`task`), the stores (`KeyValueStore`, `StatePersistence`), logging
(`LoggerWrapper`), reports (`RunReport`) and errors (`OpusError`).
"""

from __future__ import annotations

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
from opus_core.hookspecs import hookimpl
from opus_core.logger import LoggerWrapper
from opus_core.manifest import Task
from opus_core.persistence import StatePersistance, StatePersistence
from opus_core.processor import TaskProcessor
from opus_core.report import RunReport, TaskResult, TaskStatus
from opus_core.runners import BaseTaskRun, MultiprocessTaskRun, SequentialTaskRun
from opus_core.store import KeyValueStore
from opus_core.version import __version__

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
