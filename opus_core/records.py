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
    if kind is int:
        try:
            str(value)  # JSON writes it in decimal: past `sys.get_int_max_str_digits()`, it cannot
        except ValueError:
            raise NotStorable("an integer too large to write") from None
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {TAG: "float", "value": repr(value)}
    if kind is bytes or kind is bytearray:
        return {TAG: kind.__name__, "base64": base64.b64encode(value).decode("ascii")}
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
            "published": copy.deepcopy(self.published),
        }
