"""Run records: each task's outcome for a (command, context), saved as soon as it finishes.

They are what `resume=True` (`opus run --resume`) reads: a task whose last
record for the same command and context says it succeeded with the same
manifest checksum — and whose dependencies are all resumed too — is not run
again; the values it published are restored for its dependents.
"""

from __future__ import annotations

import base64
import copy
import math
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opus_core.errors import OpusError
from opus_core.manifest import Task
from opus_core.persistence.base import RUN_RECORDS, StatePersistence, json_text
from opus_core.results import STATUSES, TaskResult, TaskStatus

RECORD_KIND = "opus.task-record"


def record_id(command: str, context: str, task_id: str) -> str:
    """The state identifier of a task's record (`opus-run:<command>:<context>:<task id>`)."""
    return f"{RUN_RECORDS}{command}:{context}:{task_id}"


@dataclass
class TaskRecord:
    """What persistence keeps about one task's last run for one command and context.

    `published` is the values the task published, as they were (decoded from
    the record, see `encode`), or None when they could not be stored
    faithfully and so cannot be restored (a resumed run then runs the task again).
    `traceback` is the formatted traceback of the last failed attempt (None
    unless it raised; records written before it existed have none).
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
    traceback: str | None = None

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
        if published is not None:
            try:
                fields["published"] = decode(published)
            except (ValueError, RecursionError):
                return None  # damaged: no record, so the task runs again
            if not isinstance(fields["published"], dict):
                return None
        try:
            return cls(**fields)
        except TypeError:
            return None


TAG = "$opus"
"""The key that marks a JSON object as a tagged value in a record's `published`."""

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_MAX_DEPTH = 200


class NotStorable(Exception):
    """A value that the record encoding cannot bring back unchanged."""


def encode(value: Any) -> Any:
    """`value` as JSON data that `decode` turns back into an equal value of the same types.

    JSON's own types (exactly `str`, `int`, `bool`, `None`, finite `float`,
    `list` and `dict` with `str` keys) are stored as they are. Tuples, sets,
    frozensets, bytes, bytearrays, non-finite floats and dicts with other
    keys are stored as tagged objects (`{"$opus": "tuple", "items": [...]}`);
    a dict that has a `$opus` key of its own is tagged too, so nothing is
    mistaken for a tag. Anything else — subclasses included (an `IntEnum`, a
    namedtuple, an `OrderedDict`), other objects, cycles, nesting too deep —
    raises `NotStorable`: it is never approximated.
    """
    return _encode(value, set())


def _encode(value: Any, path: set[int]) -> Any:
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int or kind is float or kind is bytes or kind is bytearray:
        return _encode_scalar(value, kind)
    if kind not in (list, tuple, set, frozenset, dict):
        raise NotStorable(f"a {kind.__module__}.{kind.__qualname__}")
    if id(value) in path:
        raise NotStorable("a value that contains itself")
    if len(path) >= _MAX_DEPTH:
        raise NotStorable(f"values nested more than {_MAX_DEPTH} deep")
    path.add(id(value))
    try:
        if kind is list:
            return [_encode(item, path) for item in value]
        if kind is dict:
            if all(type(key) is str for key in value) and TAG not in value:
                return {key: _encode(item, path) for key, item in value.items()}
            return {
                TAG: "dict",
                "items": [[_encode(key, path), _encode(item, path)] for key, item in value.items()],
            }
        return {TAG: kind.__name__, "items": [_encode(item, path) for item in value]}
    finally:
        path.discard(id(value))


def _encode_scalar(value: Any, kind: type) -> Any:
    """An int, a float, bytes or a bytearray, as `encode` stores it."""
    if kind is int:
        try:
            str(value)  # JSON writes it in decimal: past `sys.get_int_max_str_digits()`, it cannot
        except ValueError:
            raise NotStorable("an integer too large to write") from None
        return value
    if kind is float:
        return value if math.isfinite(value) else {TAG: "float", "value": repr(value)}
    return {TAG: kind.__name__, "base64": base64.b64encode(value).decode("ascii")}


def decode(data: Any) -> Any:
    """The value `encode` made `data` from; raises `ValueError` if `data` is not such data."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if TAG not in data:
        return {key: decode(item) for key, item in data.items()}
    tag = data[TAG]
    try:
        if tag == "float":
            return _NON_FINITE[data["value"]]
        if tag in ("bytes", "bytearray"):
            raw = base64.b64decode(data["base64"].encode("ascii"), validate=True)
            return raw if tag == "bytes" else bytearray(raw)
        items = data["items"]
        if not isinstance(items, list):
            raise TypeError("items is not a list")
        if tag == "dict":
            return {decode(key): decode(item) for key, item in items}
        if tag in _COLLECTIONS:
            return _COLLECTIONS[tag](decode(item) for item in items)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed {TAG} {tag!r} value: {exc}") from None
    raise ValueError(f"unknown {TAG} tag {tag!r}")


_COLLECTIONS: dict[str, Any] = {"tuple": tuple, "set": set, "frozenset": frozenset}


def storable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """`values` encoded for a record (see `encode`), or None if they cannot be restored unchanged.

    A record whose `published` is None is never restored: a resumed run runs
    its task again rather than hand its dependents values that differ from
    what the task published.
    """
    if not values:
        return {}
    try:
        encoded: dict[str, Any] = encode(dict(values))
    except (NotStorable, RecursionError):
        return None
    return encoded


class RunRecords:
    """Reads and writes the records of one run."""

    def __init__(self, persistence: StatePersistence, command: str, context: str) -> None:
        self.persistence = persistence
        self.command = command
        self.context = context
        self.prefix = record_id(command, context, "")
        self.table: RecordTable | None = None
        """The run's records as the scheduler's columns, when the persistence keeps them so."""

    def track(
        self,
        tasks: Sequence[Task],
        status: bytearray,
        attempts: Sequence[int],
        ended_at: array[float],
        durations: array[float],
        errors: Mapping[int, str],
        traces: Mapping[int, str],
    ) -> None:
        """Offer the persistence the scheduler's columns for `tasks`, the tasks of the run.

        A persistence that takes them (`StatePersistence.adopt_run_records`, as the
        in-memory one does) keeps the run's `RecordTable`: each `save` then marks a
        task's record as saved rather than making one. Any other gets each record
        through `save_record` as the task finishes.
        """
        table = RecordTable(
            self.command, self.context, tasks, status, attempts, ended_at, durations, errors, traces
        )
        if self.persistence.adopt_run_records(table):
            self.table = table

    def close(self) -> None:
        """The run has ended: let the persistence set aside what the run's records replace."""
        if self.table is not None:
            self.persistence.run_records_finished(self.table)

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

    def save(
        self,
        task: Task,
        result: TaskResult,
        published: dict[str, Any] | None,
        index: int | None = None,
    ) -> None:
        """Save `task`'s outcome now; raises `OpusError` if persistence cannot.

        `index` is the task's position in the run's `tracked` tasks, if it is one.
        """
        if self.table is not None and index is not None:
            self.table.save(index, published)
            return
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
            result.traceback,
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
    traceback: str | None = None

    def to_state(self) -> dict[str, Any]:
        """The record as state: a `TaskRecord`'s fields plus the `record` marker."""
        return self._state(copy.deepcopy(self.published))

    def to_json(self) -> str:
        """The record's state as JSON text, as `to_json(…, to_state())` makes it, for a
        persistence that stores text. Its fields are opus's own and `published` was made
        by `encode`, so there is nothing to copy or check on the way."""
        return json_text(self._state(self.published))

    def _state(self, published: dict[str, Any] | None) -> dict[str, Any]:
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
            "traceback": self.traceback,
            "published": published,
        }


class RecordTable:
    """The records of one run, kept by the in-memory persistence as the scheduler keeps the
    run: a byte per task saying whether its record was saved, and the scheduler's own
    columns for the rest (status, attempts, end, duration, error, traceback).

    A record's state is made when it is read (`to_state`), as a `PendingRecord`'s is; a
    million-task run so costs no record object, no identifier string and no dict entry
    per task. Looking a record up by task id builds the index of names on first use.
    """

    __slots__ = (
        "_index",
        "attempts",
        "command",
        "context",
        "durations",
        "ended_at",
        "errors",
        "prefix",
        "published",
        "saved",
        "status",
        "tasks",
        "traces",
    )

    def __init__(
        self,
        command: str,
        context: str,
        tasks: Sequence[Task],
        status: bytearray,
        attempts: Sequence[int],
        ended_at: array[float],
        durations: array[float],
        errors: Mapping[int, str],
        traces: Mapping[int, str],
    ) -> None:
        self.command = command
        self.context = context
        self.prefix = record_id(command, context, "")
        self.tasks = tasks
        self.status = status
        self.attempts = attempts
        self.ended_at = ended_at
        self.durations = durations
        self.errors = errors
        self.traces = traces
        self.saved = bytearray(len(tasks))
        self.published: dict[int, dict[str, Any] | None] = {}
        """The encoded values (see `storable`) of each task that published any."""
        self._index: dict[str, int] | None = None

    def save(self, index: int, published: dict[str, Any] | None) -> None:
        """The record of the task at `index` is saved, with the values it published."""
        if published:
            self.published[index] = storable(published)
        self.saved[index] = 1

    def find(self, task_id: str) -> int | None:
        """The position of `task_id`'s saved record, or None."""
        if self._index is None:
            self._index = {t.meta.name: i for i, t in enumerate(self.tasks) if t.meta.name}
        index = self._index.get(task_id)
        return index if index is not None and self.saved[index] else None

    def discard(self, task_id: str) -> bool:
        """Forget `task_id`'s record (it was replaced or deleted); True if there was one."""
        index = self.find(task_id)
        if index is None:
            return False
        self.saved[index] = 0
        return True

    def identifiers(self) -> Iterator[tuple[str, int]]:
        """The state identifier and position of every saved record."""
        saved, tasks, prefix = self.saved, self.tasks, self.prefix
        for index in range(len(saved)):
            if saved[index]:
                yield f"{prefix}{tasks[index].task_id}", index

    def record(self, index: int) -> TableRecord:
        """The record at `index`, kept on its own (its state made when it is read)."""
        return TableRecord(self, index)

    def to_state(self, index: int) -> dict[str, Any]:
        """The record at `index` as state, as `PendingRecord.to_state` makes it."""
        task = self.tasks[index]
        published = self.published.get(index, {})
        return {
            "record": RECORD_KIND,
            "task": task.task_id,
            "command": self.command,
            "context": self.context,
            "status": STATUSES[self.status[index] - 1].value,
            "checksum": task.checksum,
            "attempts": self.attempts[index],
            "finished_at": self.ended_at[index],
            "duration": self.durations[index],
            "error": self.errors.get(index),
            "traceback": self.traces.get(index),
            "published": copy.deepcopy(published),
        }


class TableRecord:
    """One record of a `RecordTable` kept on its own, once a later run replaced the rest."""

    __slots__ = ("index", "table")

    def __init__(self, table: RecordTable, index: int) -> None:
        self.table = table
        self.index = index

    def to_state(self) -> dict[str, Any]:
        """The record as state."""
        return self.table.to_state(self.index)
