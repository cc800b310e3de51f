"""The hooks a plugin can implement — the whole plugin contract in one file.

A plugin is a module (or any object) with functions decorated by
`opus_core.hookimpl`, named after the hookspecs below. Make it discoverable
with an entry point in the plugin distribution's `pyproject.toml`::

    [project.entry-points.opus]
    myplugin = "opus_plugin_myplugin"

or register it in-process with `Tasks(plugins=[module_or_object])`.

Registration hooks are called once per plugin manager (lazily, the first time
opus needs what they provide) and every implementation's result is used.
Lifecycle hooks are called during each run; they are notifications — their
return values are ignored, and one that raises is logged with the plugin's
name without stopping the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.processor import TaskProcessor
    from opus_core.report import RunReport, TaskResult
    from opus_core.runners.base import Runner

PROJECT = "opus"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration ---------------------------------------------------------------


@hookspec
def opus_register_runners() -> Iterable[type[Runner]]:
    """Return the `Runner` subclasses this plugin provides.

    Called once, when opus first needs to know which runners exist. Each class
    must set a unique `name` — the value users write in `[opus] runner` and
    `runner=` — and take its options, from `[runners.<name>]`, as keyword
    arguments of `__init__`. Two plugins providing one name is an error.
    """


@hookspec
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """Return the `StatePersistence` subclasses this plugin provides.

    Called once, when opus first needs to know which persistence backends
    exist. Each class must set a unique `name` (what `[opus] persistence`
    selects) and take its options, from `[persistence.<name>]`, as keyword
    arguments. Two plugins providing one name is an error.
    """


@hookspec
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """Return the `LoggerWrapper` subclasses this plugin provides.

    Called once, when opus first needs to know which loggers exist. Each class
    must set a unique `name` (what `[opus] logger` selects) and take its
    options, from `[loggers.<name>]`, as keyword arguments; `level` is passed
    from `[opus] log_level` unless the section sets it.
    """


@hookspec
def opus_register_processors() -> Iterable[TaskProcessor | type[TaskProcessor]]:
    """Return `TaskProcessor` instances or classes to register in every engine.

    Called once per plugin manager; the processors are registered into every
    `Tasks` built from configuration (`Tasks.from_config`, `opus run`).
    Classes are instantiated with the engine's logger.
    """


# -- run lifecycle ------------------------------------------------------------


@hookspec
def opus_run_started(plan: Plan) -> None:
    """A run is about to start its first task.

    `plan.command` and `plan.context` say what runs; `plan.tasks` lists the
    tasks in scope in a dependency order, `plan.excluded` those out of scope.
    """


@hookspec
def opus_task_started(task: Task, attempt: int) -> None:
    """`task` was handed to the runner for attempt number `attempt` (from 1)."""


@hookspec
def opus_task_retrying(task: Task, attempt: int, error: str, delay: float) -> None:
    """Attempt `attempt` of `task` failed with `error`; the next starts in `delay` seconds."""


@hookspec
def opus_task_finished(task: Task, result: TaskResult) -> None:
    """`task` reached its final status; `result` is its entry in the run report.

    Called for every task in scope, including those skipped or cancelled
    without starting.
    """


@hookspec
def opus_run_finished(report: RunReport) -> None:
    """The run ended; `report` is what `Tasks.process_context` returns."""
