"""Run history: what each run was, kept through the persistence (`save_run`, `list_runs`, ...).

A run is a plain dict, the same for every persistence (times are seconds
since the epoch; `for_json` turns them into ISO 8601)::

    {"id": "20261127T101500.123-3f2a9c",   # UTC start, sortable, plus 6 random hex digits
     "command": "apply", "context": "default", "config": "/path/opus.toml" or None,
     "pid": 4242, "started_at": 1795774500.123, "ended_at": 1795774501.9 or None,
     "status": "running" | "succeeded" | "failed" | "interrupted" | "stopped",
     "runner": "process", "persistence": "sqlite", "counts": {"succeeded": 3, ...},
     "tasks": [{"name": "web", "kind": "Deploy", "status": "succeeded", "attempts": 1,
                "started_at": ..., "ended_at": ..., "duration": 0.5,
                "error": None, "traceback": None, "runner": "process",
                "dependencies": ["db"],
                "attempt_log": [{"attempt": 1, "started_at": ..., "ended_at": ...,
                                 "status": "succeeded", "error": None,
                                 "output": {"stdout": "...", "log": "..."}}]}]}

An attempt's `output` (only where it printed or logged anything) is what
`opus_core.capture` kept of its stdout, stderr and log lines.

The engine saves a run when it starts (status "running", no tasks yet) and
again when it ends. A run still "running" whose process is gone (killed, or
the machine went down) is shown as "interrupted" by `displayed_status`, and so
by `opus runs` and `find_run`; what is stored is left as it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opus_core.errors import OpusError, did_you_mean
from opus_core.results import STATUSES, TaskResults

if TYPE_CHECKING:
    from array import array

    from opus_core.graph import Plan
    from opus_core.persistence import StatePersistence
    from opus_core.results import RunReport, TaskResult

RUN_STATUSES = ("running", "succeeded", "failed", "interrupted", "stopped")
"""What a run's `status` may be."""

LATEST = "latest"
"""The reference `find_run` takes for the newest run."""


def new_run_id(started_at: float) -> str:
    """A run id: the UTC start to the millisecond, sortable, and 6 random hex digits."""
    seconds = int(started_at)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    millis = min(int((started_at - seconds) * 1000), 999)
    return f"{stamp}.{millis:03d}-{os.urandom(3).hex()}"


def start_run(
    command: str,
    context: str,
    *,
    config: str | None,
    runner: str,
    persistence: str,
    started_at: float | None = None,
) -> dict[str, Any]:
    """A new run as saved when it starts: status "running", no tasks yet."""
    started = time.time() if started_at is None else started_at
    return {
        "id": new_run_id(started),
        "command": command,
        "context": context,
        "config": config,
        "pid": os.getpid(),
        "started_at": started,
        "ended_at": None,
        "status": "running",
        "runner": runner,
        "persistence": persistence,
        "counts": {},
        "tasks": [],
    }


def final_status(report: RunReport, stopped: bool) -> str:
    """How a run ended: "interrupted" (Ctrl-C, SIGTERM), "stopped" (`Tasks.stop()`, or a
    persistence or runner error), else "succeeded" or "failed"."""
    if report.interrupted:
        return "stopped" if stopped else "interrupted"
    return "succeeded" if report.ok else "failed"


def finish_run(
    run: dict[str, Any],
    report: RunReport,
    plan: Plan,
    attempt_logs: Sequence[list[dict[str, Any]] | None],
    *,
    status: str,
    ended_at: float | None = None,
    lazy: bool = False,
    ready_at: Sequence[float] = (),
) -> dict[str, Any]:
    """`run` completed from the run's report: status, end, counts and one entry per task.

    `attempt_logs` has, per task of `plan`, the scheduler's log of its attempts
    (None for a task never attempted). With `lazy`, `run["tasks"]` is a `RunTasks`,
    which makes each task's entry when it is read — for a persistence that keeps the
    run in memory as it is handed over (`StatePersistence.lazy_run_tasks`). `ready_at`
    has, per task, when its last dependency ended (0.0 for a task with none, which was
    ready when the run started).
    """
    tasks = RunTasks(run["runner"], report, plan, attempt_logs, ready_at, run["started_at"])
    run["tasks"] = tasks if lazy else list(tasks)
    run["counts"] = {key: n for key, n in report.counts().items() if n}
    run["status"] = status
    run["ended_at"] = time.time() if ended_at is None else ended_at
    return run


def open_attempt(attempt: int, started_at: float) -> dict[str, Any]:
    """An attempt's entry in a task's `attempt_log`, as the attempt starts."""
    return {
        "attempt": attempt,
        "started_at": started_at,
        "ended_at": None,
        "status": "running",
        "error": None,
    }


TASK_FIELDS = (
    "name",
    "kind",
    "status",
    "attempts",
    "ready_at",
    "started_at",
    "ended_at",
    "duration",
    "error",
    "traceback",
    "runner",
)
"""The fields every task's entry in a run begins with, in this order; then `dependencies`,
`attempt_log` and, where the task declared any, `resources` and `priority`."""

ONE_ATTEMPT_FIELDS = ("started_at", "ended_at", "status", "error")
"""The fields of a task's entry that its one attempt repeats, when it was not retried."""


def one_attempt(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The `attempt_log` entry of a task tried once: its start, end, status and error."""
    return {"attempt": 1, **{key: entry[key] for key in ONE_ATTEMPT_FIELDS}}


class RunTasks(Sequence[dict[str, Any]]):
    """The `tasks` of a finished run, each entry made when it is read.

    It holds the plan and the report, not a dict per task: the in-memory persistence
    keeps a million-task run as this, and turns it into a list only when the run
    is read back (`materialized`).
    """

    __slots__ = ("_logs", "_plan", "_ready_at", "_report", "_result", "_runner", "_started_at")

    def __init__(
        self,
        runner: str,
        report: RunReport,
        plan: Plan,
        attempt_logs: Sequence[list[dict[str, Any]] | None],
        ready_at: Sequence[float] = (),
        started_at: float | None = None,
    ) -> None:
        self._runner = runner
        self._report = report
        self._plan = plan
        self._logs = attempt_logs
        self._ready_at = ready_at
        self._started_at = started_at
        results = report.results
        self._result: Callable[[int], TaskResult] = (
            results.at  # the scheduler's columns, in plan order
            if isinstance(results, TaskResults) and len(results) == len(plan.tasks)
            else lambda index: results[plan.tasks[index].task_id]
        )

    def __len__(self) -> int:
        return len(self._plan.tasks)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not 0 <= index < len(self._plan.tasks):
            raise IndexError(index)
        return self._entry(index, self._result(index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self._plan.tasks)):
            yield self._entry(index, self._result(index))

    def _entry(self, index: int, result: TaskResult) -> dict[str, Any]:
        values, once, more = self._parts(index, result)
        entry = dict(zip(TASK_FIELDS, values, strict=True))
        entry["dependencies"] = more.pop("dependencies")
        entry["attempt_log"] = [one_attempt(entry)] if once else more.pop("attempt_log")
        entry.update(more)  # resources and priority, where declared
        return entry

    def parts(self, index: int) -> tuple[tuple[Any, ...], bool, dict[str, Any]]:
        """The entry at `index` in three parts, for a persistence that stores it so: the
        values of its `TASK_FIELDS`, in order; whether its `attempt_log` is its one attempt
        made of those (`one_attempt`), left out of the third part; and its other fields."""
        if not 0 <= index < len(self._plan.tasks):
            raise IndexError(index)
        return self._parts(index, self._result(index))

    def _parts(
        self, index: int, result: TaskResult
    ) -> tuple[tuple[Any, ...], bool, dict[str, Any]]:
        tasks = self._plan.tasks
        logs = self._logs
        started: float | None
        ended: float | None
        log: list[dict[str, Any]] | None = None
        if isinstance(logs, AttemptLogs) and logs.once(index):
            once = True
            started, ended = logs.times(index)
        else:
            once = False
            log = logs[index] if index < len(logs) else None
            started = log[0]["started_at"] if log else None
            ended = log[-1]["ended_at"] if log else None
        ready = self._ready_at[index] if index < len(self._ready_at) else 0.0
        values = (
            result.task_id,
            tasks[index].kind,
            result.status.value,
            result.attempts,
            (ready or self._started_at) if once or log else None,
            started,
            ended,
            result.duration if result.attempts else None,
            result.error,
            result.traceback,
            self._runner,
        )
        deps = self._plan.deps
        first, end = deps.offsets[index], deps.offsets[index + 1]
        more: dict[str, Any] = {
            "dependencies": [tasks[d].task_id for d in deps.targets[first:end]]
            if end > first
            else []
        }
        if not once:
            more["attempt_log"] = log or []
        meta = tasks[index].meta
        if meta.resources or meta.priority:  # only where declared: most tasks have neither
            more["resources"] = dict(meta.resources)
            more["priority"] = meta.priority
        return values, once, more


def materialized(run: dict[str, Any]) -> dict[str, Any]:
    """`run` with its `tasks` a list of dicts (a copy, if they were a `RunTasks`)."""
    tasks = run.get("tasks")
    if isinstance(tasks, RunTasks):
        return {**run, "tasks": list(tasks)}
    return run


# -- reading ------------------------------------------------------------------------------------


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: it exists
        return True
    return True


def displayed_status(run: dict[str, Any]) -> str:
    """The run's status as shown: a "running" run whose process is gone is "interrupted"."""
    status = str(run.get("status", "?"))
    if status == "running" and not _alive(run.get("pid")):
        return "interrupted"
    return status


def find_run(persistence: StatePersistence, ref: str = LATEST) -> dict[str, Any]:
    """The run `ref` names, tasks included: "latest", a whole id, or a prefix of one id.

    Its `status` is the displayed one (see `displayed_status`). Raises
    `OpusError` saying what there is when nothing, or more than one run, matches.
    """
    run = None
    if ref == LATEST:
        newest = persistence.list_runs(limit=1)
        if not newest:
            raise OpusError(
                f"no runs recorded yet in {_where(persistence)}; `opus run` records one"
            )
        ref = str(newest[0]["id"])
    else:
        run = persistence.load_run(ref) if ref else None
        if run is None:
            ids = [str(r["id"]) for r in persistence.list_runs()]
            matches = [i for i in ids if ref and i.startswith(ref)]
            if len(matches) > 1:
                more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
                raise OpusError(
                    f"run {ref!r} is ambiguous: it begins {', '.join(matches[:5])}{more}; "
                    "give more of the id"
                )
            if not matches:
                hint = did_you_mean(ref, ids) or (
                    "; `opus runs list` shows them" if ids else "; no runs recorded yet"
                )
                raise OpusError(f"no run {ref!r} in {_where(persistence)}{hint}")
            ref = matches[0]
    if run is None:  # not loaded above: the newest run, or the one a prefix names
        run = persistence.load_run(ref)
    if run is None:  # pruned meanwhile by another process
        raise OpusError(f"run {ref!r} is gone (pruned meanwhile?); `opus runs list` shows the runs")
    run["status"] = displayed_status(run)
    return run


def _where(persistence: StatePersistence) -> str:
    return f"persistence {getattr(persistence, 'name', type(persistence).__name__)!r}"


# -- JSON ---------------------------------------------------------------------------------------

_TIMES = ("ready_at", "started_at", "ended_at")


def iso(epoch: float | None) -> str | None:
    """A moment (seconds since the epoch) in ISO 8601, UTC: `2025-03-01T13:02:33.120+00:00`."""
    if epoch is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")


def for_json(run: dict[str, Any]) -> dict[str, Any]:
    """A copy of `run` (or a summary) with every timestamp in ISO 8601, UTC."""

    def convert(entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        for key in _TIMES:
            value = out.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = iso(float(value))
        return out

    converted = convert(run)
    if isinstance(run.get("tasks"), list):
        converted["tasks"] = [
            {
                **convert(task),
                "attempt_log": [convert(a) for a in task.get("attempt_log") or []],
            }
            for task in run["tasks"]
        ]
    return converted


class AttemptLogs(Sequence[list[dict[str, Any]]]):
    """Every task's attempt log, made as it is read from the scheduler's columns.

    The one attempt of a task that was not retried is its start and end times and
    the task's outcome; a retried task has a log of its own.
    """

    __slots__ = (
        "_attempts",
        "_ended_at",
        "_errors",
        "_output",
        "_retried",
        "_started_at",
        "_status",
    )

    def __init__(
        self,
        attempts: Sequence[int],
        status: bytearray,
        started_at: array[float],
        ended_at: array[float],
        errors: Mapping[int, str],
        retried: Mapping[int, list[dict[str, Any]]],
        output: Mapping[int, dict[str, str]] | None = None,
    ) -> None:
        self._attempts = attempts
        self._output = output or {}
        self._status = status
        self._started_at = started_at
        self._ended_at = ended_at
        self._errors = errors
        self._retried = retried

    def __len__(self) -> int:
        return len(self._status)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:  # type: ignore[override]
        if not 0 <= index < len(self._status):
            raise IndexError(index)
        log = self._retried.get(index)
        if log is not None:
            return log
        if not self._attempts[index]:
            return []
        ended = self._ended_at[index]
        code = self._status[index]
        done = bool(ended and code)
        entry: dict[str, Any] = {
            "attempt": 1,
            "started_at": self._started_at[index],
            "ended_at": ended if done else None,
            "status": STATUSES[code - 1].value if done else "running",
            "error": self._errors.get(index) if done else None,
        }
        output = self._output.get(index)
        if output:
            entry["output"] = output
        return [entry]

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        return (self[i] for i in range(len(self._status)))

    def once(self, index: int) -> bool:
        """Whether the task at `index` ended after one attempt that kept no output: its log
        is `one_attempt` of its entry, made of `times` and the task's status and error."""
        return (
            index not in self._retried
            and self._attempts[index] == 1
            and bool(self._ended_at[index] and self._status[index])
            and not self._output.get(index)
        )

    def times(self, index: int) -> tuple[float, float]:
        """When the first attempt of the task at `index` started, and when its last ended."""
        return self._started_at[index], self._ended_at[index]
