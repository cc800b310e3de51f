"""What a run produced: `TaskStatus`, `TaskResult` per task, and the `RunReport`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from opus_core.errors import RunFailedError


class TaskStatus(StrEnum):
    """How a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    RESTORED = "restored"


_OK = frozenset({TaskStatus.SUCCEEDED, TaskStatus.RESTORED})


@dataclass
class TaskResult:
    """One task's outcome in a run.

    `error` is the failure in one line (type and message); `traceback` is the
    formatted traceback of the last failed attempt, as the process or worker
    that ran it formatted it — None when the task did not fail by raising
    (succeeded, skipped, restored, or failed before it could start).
    """

    task_id: str
    kind: str
    status: TaskStatus
    attempts: int = 0
    duration: float = 0.0
    error: str | None = None
    traceback: str | None = None

    @property
    def resumed(self) -> bool:
        """True when the task was restored instead of run (`--resume` or a plugin)."""
        return self.status is TaskStatus.RESTORED


@dataclass
class RunReport:
    """The outcome of `Tasks.process_context`: a `TaskResult` per task in scope.

    Results are in the order the tasks were planned (a topological order).
    `interrupted` is True when the run was stopped (`Tasks.stop()` or Ctrl-C).
    """

    command: str
    context: str
    results: dict[str, TaskResult] = field(default_factory=dict)
    duration: float = 0.0
    interrupted: bool = False
    started_at: float = 0.0
    """When the run started, in seconds since the epoch (0.0 when unknown)."""
    run_id: str | None = None
    """The run's id in the history (`opus runs show ID`), None when it was not recorded."""

    @property
    def ok(self) -> bool:
        """True when every task in scope succeeded (or was restored)."""
        return not self.interrupted and all(r.status in _OK for r in self.results.values())

    def __getitem__(self, task_id: str) -> TaskResult:
        return self.results[task_id]

    def __iter__(self) -> Iterator[TaskResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def with_status(self, status: TaskStatus | str) -> list[str]:
        """The ids of the tasks that ended with `status` (a `TaskStatus` or its value)."""
        wanted = TaskStatus(status)
        return [r.task_id for r in self.results.values() if r.status is wanted]

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each status (every status listed, zeros included)."""
        counter = Counter(r.status for r in self.results.values())
        return {status.value: counter.get(status, 0) for status in TaskStatus}

    def summary(self) -> str:
        """One line: the counts that are not zero and the duration."""
        parts = [f"{n} {status}" for status, n in self.counts().items() if n]
        return f"{', '.join(parts) or 'no tasks'} in {self.duration:.2f}s"

    def raise_on_failure(self) -> None:
        """Raise `RunFailedError` naming every task that did not succeed."""
        if self.ok:
            return
        bad = [r for r in self.results.values() if r.status not in _OK]
        first = next((r for r in bad if r.error), None)
        detail = f"; first error ({first.task_id}): {first.error}" if first else ""
        names = ", ".join(f"{r.task_id} ({r.status})" for r in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        stopped = "run was interrupted; " if self.interrupted else ""
        raise RunFailedError(f"{stopped}{len(bad)} task(s) did not succeed: {names}{more}{detail}")


REMOTE_TRACEBACK = "(raised in the task's process)\n"
"""How an exception note carrying the traceback formatted where the task ran begins.

The `process` runner adds such a note in the task's process, before the
exception travels back; `format_traceback` prefers it to the local frames.
"""


def format_traceback(exc: BaseException) -> str:
    """The traceback of a failed attempt as text, as the process that ran it formatted it.

    An exception sent back from another process carries that process's text in
    a note (see `REMOTE_TRACEBACK`); otherwise the exception's own frames are
    formatted here (a runner that rebuilds remote frames, as dask's does with
    tblib, gives the remote ones). Never raises.
    """
    for note in reversed(getattr(exc, "__notes__", None) or ()):  # the last: the outermost
        if isinstance(note, str) and note.startswith(REMOTE_TRACEBACK):
            return note[len(REMOTE_TRACEBACK) :].rstrip()
    import traceback

    try:
        return "".join(traceback.format_exception(exc)).rstrip()
    except Exception:  # an exception whose __str__ or notes cannot be shown
        try:
            lines = traceback.format_tb(exc.__traceback__)
        except Exception:
            lines = []
        return "".join([*lines, f"{type(exc).__qualname__}: <message cannot be shown>"]).rstrip()
