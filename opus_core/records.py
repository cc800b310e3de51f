"""Run records: each task's outcome for a (command, context), saved as soon as it finishes.

They are what `resume=True` (`opus run --resume`) reads: a task whose last
record for the same command and context says it succeeded with the same
manifest checksum — and whose dependencies are all resumed too — is not run
again; the values it published are restored for its dependents.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from opus_core.errors import OpusError
from opus_core.manifest import Task
from opus_core.persistence import RUN_RECORDS, StatePersistence
from opus_core.report import TaskResult, TaskStatus

RECORD_KIND = "opus.task-record"


def record_id(command: str, context: str, task_id: str) -> str:
    """The state identifier of a task's record (`opus-run:<command>:<context>:<task id>`)."""
    return f"{RUN_RECORDS}{command}:{context}:{task_id}"


@dataclass
class TaskRecord:
    """What persistence keeps about one task's last run for one command and context.

    `published` is None when the values were not JSON data and so cannot be
    restored (a resumed run then runs the task again).
    """

    task: str
    command: str
    context: str
    status: str
    checksum: str
    attempts: int
    finished_at: float
    duration: float
    error: str | None
    published: dict[str, Any] | None

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> TaskRecord | None:
        """The record in `data`, or None if `data` is not a well-formed record."""
        if data.get("record") != RECORD_KIND:
            return None
        fields = {k: v for k, v in data.items() if k != "record"}
        published = fields.get("published")
        if not isinstance(fields.get("checksum"), str) or not (
            published is None or isinstance(published, dict)
        ):
            return None
        try:
            return cls(**fields)
        except TypeError:
            return None


def storable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of `values` if they are JSON data (so a resumed run can restore them), else None."""
    if not values:
        return {}
    try:
        copied: dict[str, Any] = json.loads(json.dumps(values, allow_nan=False))
    except (TypeError, ValueError):
        return None
    return copied


class RunRecords:
    """Reads and writes the records of one run."""

    def __init__(self, persistence: StatePersistence, command: str, context: str) -> None:
        self.persistence = persistence
        self.command = command
        self.context = context
        self.prefix = record_id(command, context, "")

    def load(self, task: Task) -> TaskRecord | None:
        """The last record of `task` for this command and context, if any and readable."""
        try:
            data = self.persistence.get_object_state(
                record_id(self.command, self.context, task.task_id)
            )
        except OpusError:
            return None  # an unreadable record is no record: the task runs again
        return TaskRecord.from_state(data) if data else None

    def resumable(self, task: Task) -> TaskRecord | None:
        """The record that lets `task` be skipped on resume, or None."""
        record = self.load(task)
        if (
            record is not None
            and record.status == TaskStatus.SUCCEEDED
            and record.checksum == task.checksum
            and record.published is not None
        ):
            return record
        return None

    def save(self, task: Task, result: TaskResult, published: dict[str, Any] | None) -> None:
        """Save `task`'s outcome now; raises `OpusError` if persistence cannot."""
        record = PendingRecord(
            task,
            self.command,
            self.context,
            result.status.value,
            result.attempts,
            time.time(),
            result.duration,
            result.error,
            storable(published),
        )
        self.persistence.save_record(f"{self.prefix}{task.task_id}", record)


@dataclass(slots=True)
class PendingRecord:
    """A task's record as the engine hands it to persistence: `to_state()` makes the state.

    The in-memory persistence keeps it as it is, so that a run whose records
    nobody reads does not pay for a manifest checksum and a dict per task.
    A task's manifest does not change once it is added to an engine, so the
    checksum taken later is the one it had when the task ran.
    """

    task: Task
    command: str
    context: str
    status: str
    attempts: int
    finished_at: float
    duration: float
    error: str | None
    published: dict[str, Any] | None

    def to_state(self) -> dict[str, Any]:
        """The record as state: a `TaskRecord`'s fields plus the `record` marker."""
        return {
            "record": RECORD_KIND,
            "task": self.task.task_id,
            "command": self.command,
            "context": self.context,
            "status": self.status,
            "checksum": self.task.checksum,
            "attempts": self.attempts,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "error": self.error,
            "published": copy.deepcopy(self.published),
        }
