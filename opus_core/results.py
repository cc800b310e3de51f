"""What a run produced: `TaskStatus`, `TaskResult` per task, and the `RunReport`."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from opus_core.errors import RunFailedError

if TYPE_CHECKING:
    from opus_core.manifest import Task


class TaskStatus(StrEnum):
    """How a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    RESTORED = "restored"


_OK = frozenset({TaskStatus.SUCCEEDED, TaskStatus.RESTORED})

STATUSES: tuple[TaskStatus, ...] = tuple(TaskStatus)
"""Every status; a status's code in `TaskResults` is its position here plus one."""

STATUS_CODE: dict[TaskStatus, int] = {status: code for code, status in enumerate(STATUSES, 1)}
"""The code of each status (0 means "not finished")."""


@dataclass(slots=True)
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


class TaskResults(Mapping[str, TaskResult]):
    """A run's results by task id, kept as the scheduler keeps them: a byte for the status,
    a number for the attempts and the duration, errors only where there are some.

    A `TaskResult` is made each time one is read. A million-task run so holds no
    million result objects, and looking results up by id builds the index (a dict of
    every id) only when it is first done. Iteration is in the plan's order.
    """

    __slots__ = ("_attempts", "_durations", "_errors", "_index", "_status", "_tasks", "_traces")

    def __init__(
        self,
        tasks: Sequence[Task],
        status: bytearray,
        attempts: Sequence[int],
        durations: array[float],
        errors: Mapping[int, str],
        traces: Mapping[int, str],
    ) -> None:
        self._tasks = tasks
        self._status = status
        self._attempts = attempts
        self._durations = durations
        self._errors = errors
        self._traces = traces
        self._index: dict[str, int] | None = None

    def at(self, index: int) -> TaskResult:
        """The result of the task at `index` in the plan."""
        task = self._tasks[index]
        code = self._status[index]
        if not code:
            raise KeyError(f"task {task.task_id!r} has not finished")
        return TaskResult(
            task.task_id,
            task.kind,
            STATUSES[code - 1],
            self._attempts[index],
            self._durations[index],
            self._errors.get(index),
            self._traces.get(index),
        )

    def statuses(self) -> Iterator[TaskStatus]:
        """Each task's status, in order, without making its result."""
        for code in self._status:
            yield STATUSES[code - 1]

    def __getitem__(self, task_id: str) -> TaskResult:
        if self._index is None:
            self._index = {task.task_id: i for i, task in enumerate(self._tasks)}
        return self.at(self._index[task_id])

    def __iter__(self) -> Iterator[str]:
        return (task.task_id for task in self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        try:
            self[task_id]  # type: ignore[index]
        except (KeyError, TypeError):
            return False
        return True

    def values(self) -> Iterable[TaskResult]:  # type: ignore[override]
        """Every result, in order (one made per task as it is reached)."""
        return (self.at(i) for i in range(len(self._tasks)))

    def __repr__(self) -> str:
        return f"<TaskResults of {len(self)} task(s)>"


@dataclass
class RunReport:
    """The outcome of `Tasks.process_context`: a `TaskResult` per task in scope.

    Results are in the order the tasks were planned (a topological order).
    `interrupted` is True when the run was stopped (`Tasks.stop()` or Ctrl-C).
    """

    command: str
    context: str
    results: Mapping[str, TaskResult] = field(default_factory=dict)
    """By task id; the engine's is a `TaskResults`, which makes each result as it is read."""
    duration: float = 0.0
    interrupted: bool = False
    started_at: float = 0.0
    """When the run started, in seconds since the epoch (0.0 when unknown)."""
    run_id: str | None = None
    """The run's id in the history (`opus runs show ID`), None when it was not recorded."""

    def _statuses(self) -> Iterator[TaskStatus]:
        results = self.results
        if isinstance(results, TaskResults):
            return results.statuses()
        return (r.status for r in results.values())

    @property
    def ok(self) -> bool:
        """True when every task in scope succeeded (or was restored)."""
        return not self.interrupted and all(status in _OK for status in self._statuses())

    def __getitem__(self, task_id: str) -> TaskResult:
        return self.results[task_id]

    def __iter__(self) -> Iterator[TaskResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def unsuccessful(self) -> list[TaskResult]:
        """The results of the tasks that neither succeeded nor were restored, in plan order
        (made for those tasks only)."""
        results = self.results
        if isinstance(results, TaskResults):
            return [
                results.at(i) for i, status in enumerate(results.statuses()) if status not in _OK
            ]
        return [r for r in results.values() if r.status not in _OK]

    def with_status(self, status: TaskStatus | str) -> list[str]:
        """The ids of the tasks that ended with `status` (a `TaskStatus` or its value)."""
        wanted = TaskStatus(status)
        return [
            task_id
            for task_id, found in zip(self.results, self._statuses(), strict=True)
            if found is wanted
        ]

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each status (every status listed, zeros included)."""
        counter = Counter(self._statuses())
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
