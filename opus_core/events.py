"""Lifecycle notifications: the engine raises them here, observers (and hooks) receive them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.report import RunReport, TaskResult


def display_name(task: Task) -> str:
    """How messages name a task: its name, or its kind and a short checksum."""
    return task.meta.name or f"{task.kind}@{task.checksum[:12]}"


class RunObserver:
    """Receives the lifecycle of a run. Every method does nothing unless overridden."""

    def run_started(self, plan: Plan) -> None:
        """The run of `plan` is about to start its first task."""

    def task_started(self, task: Task, attempt: int) -> None:
        """`task` was handed to the runner for its `attempt`-th attempt (from 1)."""

    def task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        """Attempt `attempt` of `task` failed with `error`; the next starts in `delay` s."""

    def task_finished(self, task: Task, result: TaskResult) -> None:
        """`task` reached its final status (skipped and cancelled tasks included)."""

    def run_finished(self, report: RunReport) -> None:
        """The run ended; `report` is what `process_context` returns."""


def _enabled(logger: Any, level: int) -> bool:
    check = getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(level))


class LoggingObserver(RunObserver):
    """Writes the lifecycle to a `LoggerWrapper`."""

    def __init__(self, logger: LoggerWrapper) -> None:
        self.logger = logger
        self._debug = _enabled(logger, logging.DEBUG)
        self._info = _enabled(logger, logging.INFO)

    def run_started(self, plan: Plan) -> None:
        if self._info:
            self.logger.info(
                f"run {plan.command!r} in context {plan.context!r}: {len(plan.tasks)} task(s)"
            )

    def task_started(self, task: Task, attempt: int) -> None:
        if self._debug:
            self.logger.debug(f"task {display_name(task)!r} started (attempt {attempt})")

    def task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        self.logger.warning(
            f"task {display_name(task)!r} attempt {attempt} failed: {error}; retrying in {delay:g}s"
        )

    def task_finished(self, task: Task, result: TaskResult) -> None:
        name = display_name(task)
        if result.status == "succeeded":
            if self._info:
                self.logger.info(f"task {name!r} succeeded in {result.duration:.3f}s")
        elif result.status == "skipped":
            self.logger.warning(f"task {name!r} skipped: {result.error}")
        elif result.status == "cancelled":
            self.logger.warning(f"task {name!r} cancelled")
        else:
            self.logger.error(f"task {name!r} {result.status}: {result.error}")

    def run_finished(self, report: RunReport) -> None:
        line = f"run finished: {report.summary()}"
        if report.ok:
            self.logger.info(line)
        else:
            self.logger.error(line)


class Notifier:
    """Passes each notification to every observer; one that raises is logged and ignored.

    Observers that leave a method as `RunObserver`'s no-op are not called for it.
    """

    def __init__(self, observers: Iterable[RunObserver], logger: LoggerWrapper) -> None:
        self.observers = list(observers)
        self.logger = logger
        self._methods: dict[str, list[Any]] = {
            name: [
                getattr(o, name)
                for o in self.observers
                if getattr(type(o), name, None) is not getattr(RunObserver, name)
            ]
            for name in (
                "run_started",
                "task_started",
                "task_retrying",
                "task_finished",
                "run_finished",
            )
        }

    def _each(self, method: str, *args: Any) -> None:
        for call in self._methods[method]:
            try:
                call(*args)
            except Exception as exc:
                observer = call.__self__
                name = getattr(observer, "display_name", type(observer).__name__)
                self.logger.error(
                    f"observer {name} failed in {method}: {type(exc).__name__}: {exc}"
                )

    def run_started(self, plan: Plan) -> None:
        """Tell every observer the run of `plan` starts."""
        self._each("run_started", plan)

    def task_started(self, task: Task, attempt: int) -> None:
        """Tell every observer `task` started its `attempt`-th attempt."""
        self._each("task_started", task, attempt)

    def task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        """Tell every observer `task` will be retried."""
        self._each("task_retrying", task, attempt, error, delay)

    def task_finished(self, task: Task, result: TaskResult) -> None:
        """Tell every observer `task` ended."""
        self._each("task_finished", task, result)

    def run_finished(self, report: RunReport) -> None:
        """Tell every observer the run ended."""
        self._each("run_finished", report)
