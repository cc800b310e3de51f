"""The engine's log lines, as plugins of every engine: `LogLines` (`builtin.log`) and, at
DEBUG, `StartLines` (`builtin.log.started`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opus_core.logger import DEBUG, INFO, logs_at
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.results import RunReport, TaskResult


class LogLines:
    """The engine's log lines: each engine registers one, with its logger, as `log`.

    `success_level` is the level of the per-task lines of tasks that succeeded or were
    restored: "info" for the Python API; `opus run` makes it "debug" (pytest's way: the
    successes are counted, what went wrong is shown), and then, where no progress line is
    drawn, `progress_every` seconds apart at most, one INFO line says how far the run is.
    """

    def __init__(self, logger: LoggerWrapper) -> None:
        from opus_core.manifest import display_name

        self.logger = logger
        self._debug = self._info = self._successes = True
        self.success_level = "info"
        """"debug" to log each success at DEBUG (`opus run`), else "info"."""
        self.progress_every: float | None = None
        """Seconds between two `progress:` lines while successes are not logged one by one;
        None for no such line (the Python API, and `opus run` on a terminal)."""
        self.cancelled = 0
        """How many tasks of the run were cancelled so far: one line says so at its end."""
        self.total = self.done = self.failed = 0
        self._progress_at = 0.0
        self._name = display_name

    @hookimpl
    def opus_run_started(self, plan: Plan) -> None:
        self._debug = logs_at(self.logger, DEBUG)  # the level, as of this run
        self._info = logs_at(self.logger, INFO)
        self._successes = self._info if self.success_level == "info" else self._debug
        self.cancelled = self.done = self.failed = 0
        self.total = len(plan.tasks)
        self._progress_at = time.monotonic()
        if self._info:
            self.logger.info(
                f"run {plan.command!r} in context {plan.context!r}: {len(plan.tasks)} task(s)"
            )

    @hookimpl
    def opus_task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        self.logger.warning(
            f"task {self._name(task)!r} attempt {attempt} failed: {_printable(error)}; "
            f"retrying in {delay:g}s"
        )

    @hookimpl
    def opus_task_finished(self, task: Task, result: TaskResult) -> None:
        # Called for every task: nothing is formatted that the logger's level would drop.
        self.done += 1
        status = result.status
        if status == "succeeded" or status == "restored":
            if self._successes:
                done = "succeeded in" if status == "succeeded" else "restored, not run"
                line = f"task {self._name(task)!r} {done}"
                if status == "succeeded":
                    line = f"{line} {result.duration:.3f}s"
                if self.success_level == "info":
                    self.logger.info(line)
                else:
                    self.logger.debug(line)
            elif self.progress_every is not None and self._info:
                self._progress()
            return
        name = self._name(task)
        if status == "skipped":
            self.logger.warning(f"task {name!r} skipped: {_printable(result.error)}")
        elif status == "cancelled":
            # One line for them all at the end (Ctrl-C cancels every task not done; on a
            # big graph that is thousands); the report names them.
            self.cancelled += 1
            if self._debug:
                self.logger.debug(f"task {name!r} cancelled")
        else:
            self.failed += 1
            self.logger.error(f"task {name!r} {status}: {_printable(result.error)}")
            if self._debug and result.traceback:
                self.logger.debug(f"task {name!r} traceback:\n{_printable(result.traceback)}")

    def _progress(self) -> None:
        """The `progress:` line, if `progress_every` seconds passed since the last one."""
        now = time.monotonic()
        if now - self._progress_at >= (self.progress_every or 0.0):
            self._progress_at = now
            self.logger.info(f"progress: {self.done}/{self.total} done, {self.failed} failed")

    @hookimpl
    def opus_run_finished(self, report: RunReport) -> None:
        if self.cancelled:
            self.logger.warning(f"{self.cancelled} task(s) cancelled")
        line = f"run finished: {report.summary()}"
        if report.ok:
            self.logger.info(line)
        else:
            self.logger.error(line)


class StartLines:
    """`task '…' started (attempt N)` at DEBUG: registered beside `LogLines`, as
    `builtin.log.started`, only while the engine's logger is at DEBUG, so that a run at
    another level has no `opus_task_started` to call for each task."""

    def __init__(self, logger: LoggerWrapper) -> None:
        from opus_core.manifest import display_name

        self.logger = logger
        self._name = display_name

    @hookimpl
    def opus_task_started(self, task: Task, attempt: int) -> None:
        self.logger.debug(f"task {self._name(task)!r} started (attempt {attempt})")


def log_lines(manager: Any) -> LogLines:
    """The `LogLines` an engine's plugin manager (`Tasks.manager()`) holds as `builtin.log`."""
    plugin = manager.infos["builtin.log"].plugin
    assert isinstance(plugin, LogLines), plugin
    return plugin


def _printable(text: str | None) -> str:
    """`text` with control characters shown as escapes, line by line: a task's error
    cannot move the cursor or clear the terminal its log lines go to."""
    from opus_core.printable import printable

    return "\n".join(printable(line) for line in str(text).split("\n"))
