"""How the `sqlite` persistence keeps a task of a run's history: a row of plain columns.

A task's entry in a run (see `opus_core.history`) is a dict. Its usual fields —
`name`, `kind`, `status`, `attempts`, the three times, `duration`, `error`,
`traceback` and `runner` — are columns of their own, stored as the values they are
(the columns have no type, so SQLite converts nothing: an int stays an int, a
float a float). The one attempt of a task that was not retried is the task's own
start, end, status and error, so it is not stored twice: a bit of the row's `shape`
says so, as another says that the task depends on nothing (its `dependencies` is an
empty list). Whatever else the entry has (the names it depends on, a retried task's
`attempt_log`, `resources`, fields of a third-party persistence's runs) is a JSON
object in `more`.

A field is put in `more` instead of its column when the column could not give it back
unchanged: a bool (SQLite would give back 1), an int past 64 bits, a float that is
not finite, a string that is not valid Unicode, anything else. `shape` has a bit per
column that holds no field. What comes back is what went in (key order aside: the
columns' fields first, in the order above).

Rows written by the first schema (one JSON object per task) are kept as they were:
every column bit set, the whole entry in `more`.
"""

from __future__ import annotations

import math
from typing import Any

from opus_core.history import ONE_ATTEMPT_FIELDS, TASK_FIELDS, RunTasks, one_attempt
from opus_core.persistence.base import json_text
from opus_core.printable import is_unicode

COLUMNS = TASK_FIELDS
"""The fields of a task's entry that are columns of `task_runs`, in this order."""

ALL_ABSENT = (1 << len(COLUMNS)) - 1
"""The `shape` of a row whose columns hold nothing: the whole entry is in `more`."""

ONE_ATTEMPT = 1 << len(COLUMNS)
"""A `shape` bit: the entry's `attempt_log` is its one attempt, made from the columns."""

NO_DEPENDENCIES = 1 << (len(COLUMNS) + 1)
"""A `shape` bit (schema 3): the entry's `dependencies` is an empty list, not kept in `more`."""

_NOTHING_MORE: dict[str, Any] = {"dependencies": []}  # what most tasks add to the columns

_COLUMN_SET = frozenset(COLUMNS)
_DERIVED_BITS = sum(1 << COLUMNS.index(key) for key in ONE_ATTEMPT_FIELDS)
_SMALLEST, _LARGEST = -(2**63), 2**63 - 1
_MISSING = object()


def fits(value: object) -> bool:
    """Whether a column gives `value` back unchanged, of the same type."""
    if value is None:
        return True
    kind = type(value)
    if kind is str:
        return value.isascii() or is_unicode(value)  # type: ignore[attr-defined, arg-type]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is int:
        return _SMALLEST <= value <= _LARGEST  # type: ignore[operator]
    return False


def engine_row(tasks: RunTasks, index: int) -> tuple[Any, ...]:
    """The row of the task at `index` of the engine's `tasks`, made from its parts (see
    `RunTasks.parts`) rather than from a dict: what `task_row` makes of `tasks[index]`."""
    values, once, more = tasks.parts(index)
    if not all(map(fits, values)):
        return task_row(tasks[index])
    if more == _NOTHING_MORE:
        return (*values, NO_DEPENDENCIES | ONE_ATTEMPT if once else NO_DEPENDENCIES, None)
    return (*values, ONE_ATTEMPT if once else 0, json_text(more) if more else None)


def task_row(task: dict[str, Any]) -> tuple[Any, ...]:
    """The columns, `shape` and `more` of `task`, an entry whose values JSON can hold.

    Raises `ValueError` or `TypeError` (from the JSON encoder) for a value JSON cannot
    hold; a caller that has not made the entry itself checks it first (`to_json`).
    """
    shape = 0
    columns: list[Any] = []
    more: dict[str, Any] = {}
    bit = 1
    for key in COLUMNS:
        value = task.get(key, _MISSING)
        if value is _MISSING or not fits(value):
            columns.append(None)
            shape |= bit
            if value is not _MISSING:
                more[key] = value
        else:
            columns.append(value)
        bit <<= 1
    for key in task.keys() - _COLUMN_SET:
        value = task[key]
        if key == "attempt_log" and not shape & _DERIVED_BITS and _one_attempt(value, task):
            shape |= ONE_ATTEMPT
        elif key == "dependencies" and type(value) is list and not value:
            shape |= NO_DEPENDENCIES
        else:
            more[key] = value
    return (*columns, shape, json_text(more) if more else None)


def _one_attempt(log: object, task: dict[str, Any]) -> bool:
    """Whether `log` is exactly the one attempt `task_entry` makes from the columns, each
    value of the same type (an `attempt` of True is not 1)."""
    if type(log) is not list or len(log) != 1 or type(log[0]) is not dict:
        return False
    attempt, expected = log[0], one_attempt(task)
    return attempt.keys() == expected.keys() and all(
        attempt[key] is value or (type(attempt[key]) is type(value) and attempt[key] == value)
        for key, value in expected.items()
    )


def task_entry(columns: tuple[Any, ...], shape: int, more: dict[str, Any] | None) -> dict[str, Any]:
    """The entry `task_row` made `columns`, `shape` and `more` (decoded) of."""
    if shape == ALL_ABSENT:  # the whole entry in `more`, as the first schema kept it
        return more or {}
    entry: dict[str, Any] = {}
    bit = 1
    for key, value in zip(COLUMNS, columns, strict=True):
        if not shape & bit:
            entry[key] = value
        bit <<= 1
    if not more:
        more = {}
    elif "dependencies" in more:
        entry["dependencies"] = more.pop("dependencies")
    if shape & NO_DEPENDENCIES:
        entry["dependencies"] = []
    if shape & ONE_ATTEMPT:
        entry["attempt_log"] = [one_attempt(entry)]
    entry.update(more)
    return entry
