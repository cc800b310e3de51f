"""The live `[done/total] running N, failed N` line of `opus run` on a terminal.

It is a plugin: `opus run` registers it when stderr is a terminal. Each of its
hooks is a wrapper, so the line is cleared before any other plugin (the log
lines included) writes, and drawn again after all of them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, TextIO

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.report import RunReport, TaskResult


class Progress:
    """Counts from the lifecycle hooks, drawn on one line of `stream`."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.total = self.done = self.running = self.failed = 0
        self._lock = threading.Lock()

    def _clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()

    def _draw(self) -> None:
        line = f"[{self.done}/{self.total}] running {self.running}, failed {self.failed}"
        self.stream.write(f"\r\033[K{line}")  # stays until the next notification clears it
        self.stream.flush()

    @hookimpl(wrapper=True)
    def opus_run_started(self, plan: Plan) -> Generator[None, None, None]:
        self._clear()
        yield
        self.total = len(plan.tasks)
        self._draw()

    @hookimpl(wrapper=True)
    def opus_task_started(self) -> Generator[None, None, None]:
        self._clear()
        yield
        with self._lock:
            self.running += 1
            self._draw()

    @hookimpl(wrapper=True)
    def opus_task_retrying(self) -> Generator[None, None, None]:
        self._clear()
        yield
        with self._lock:
            self.running -= 1
            self._draw()

    @hookimpl(wrapper=True)
    def opus_task_finished(self, result: TaskResult) -> Generator[None, None, None]:
        self._clear()
        yield
        with self._lock:
            if result.attempts and result.status != "skipped":
                self.running = max(0, self.running - 1)
            self.done += 1
            if result.status in ("failed", "timed_out"):
                self.failed += 1
            self._draw()

    @hookimpl(wrapper=True)
    def opus_run_finished(self, report: RunReport) -> Generator[None, None, None]:
        self._clear()
        yield
        self._clear()
