"""Output shared by every command: tables, JSON, and the live progress line."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from opus_core.events import RunObserver

if TYPE_CHECKING:
    from opus_core.graph import Plan
    from opus_core.manifest import Task
    from opus_core.report import RunReport, TaskResult


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers, in columns as wide as their widest cell."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def emit(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], records: Any, as_json: bool
) -> None:
    """Print a listing as a table, or its records as JSON."""
    if as_json:
        print(json.dumps(records, indent=2))
    else:
        print(table(headers, rows))


def report_table(report: RunReport) -> str:
    """The end-of-run summary: one row per task, then the counts."""
    rows = [
        (
            r.task_id,
            f"{r.status} (resumed)" if r.resumed else r.status,
            r.attempts,
            f"{r.duration:.2f}s",
            (r.error or "")[:100],
        )
        for r in report
    ]
    return table(("TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows)


class ClearLine(RunObserver):
    """Clears the progress line before anything else reacts to a notification, so log lines
    written to the same terminal start at the left edge."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()

    def run_started(self, plan: Plan) -> None:
        self._clear()

    def task_started(self, task: Task, attempt: int) -> None:
        self._clear()

    def task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        self._clear()

    def task_finished(self, task: Task, result: TaskResult) -> None:
        self._clear()

    def run_finished(self, report: RunReport) -> None:
        self._clear()


class ProgressLine(RunObserver):
    """A live `done/total, running, failed` line on a terminal.

    Register `progress.clearer` first and `progress` last among the observers.
    """

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.clearer = ClearLine(stream)
        self.total = self.done = self.running = self.failed = 0
        self._lock = threading.Lock()

    def _draw(self) -> None:
        line = f"[{self.done}/{self.total}] running {self.running}, failed {self.failed}"
        self.stream.write(f"\r\033[K{line}")  # stays until the next notification clears it
        self.stream.flush()

    def run_started(self, plan: Plan) -> None:
        self.total = len(plan.tasks)
        self._draw()

    def task_started(self, task: Task, attempt: int) -> None:
        with self._lock:
            self.running += 1
            self._draw()

    def task_retrying(self, task: Task, attempt: int, error: str, delay: float) -> None:
        with self._lock:
            self.running -= 1
            self._draw()

    def task_finished(self, task: Task, result: TaskResult) -> None:
        with self._lock:
            if result.attempts and result.status != "skipped":
                self.running = max(0, self.running - 1)
            self.done += 1
            if result.status in ("failed", "timed_out"):
                self.failed += 1
            self._draw()

    def run_finished(self, report: RunReport) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()
