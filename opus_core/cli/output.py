"""Output shared by every command: one formatter for tables and JSON.

A listing command builds its rows once and calls `emit`: a table on a
terminal (or a pipe), or with `--json` the records as JSON. Results go to
standard output; logs, warnings and errors go to standard error.

Times: tables show them for a person (`duration`, `timestamp`), JSON in
ISO 8601 (`iso`); `to_json` turns `datetime`s into ISO 8601 by itself.
Tables fit the terminal: when the columns are wider than it, the widest
ones are narrowed and their cells wrap onto more lines. A cell longer than
`MAX_CELL` characters (`PIPE_CELL` on a pipe) is cut, ending in "…";
`--json` has every character.

Text from tasks (names, errors) is shown with `printable`: a control
character is written as its escape (`\x1b`, `\r`), so no task can move the
cursor or clear the screen. Every table cell goes through it.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Sequence
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from opus_core.history import iso as iso
from opus_core.printable import printable as printable

if TYPE_CHECKING:
    from opus_core.results import RunReport

GAP = "  "
MIN_COLUMN = 8
"""A narrowed column keeps at least this many characters (or its header's width)."""
LAST_COLUMN = 30
"""The last column (free text: an error, a description) is narrowed first, down to this."""
MAX_CELL = 500
"""On a terminal a table cell longer than this is cut, ending in "…" (a few lines once
wrapped); without one (a pipe, a file), where nothing wraps, at `PIPE_CELL`."""
PIPE_CELL = 200


# -- times -----------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """A duration for a person: `0.04s`, `12.3s`, `2m05s`, `1h02m`."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def timestamp(epoch: float | None) -> str:
    """A moment for a person, in local time to the second: `2025-03-01 14:02:33`."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


# -- JSON --------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(data: Any) -> str:
    """`data` as indented JSON; datetimes in ISO 8601, enums by value, paths as strings."""
    import json

    return json.dumps(data, indent=2, default=_json_default)


# -- tables ------------------------------------------------------------------------------------


def terminal_width() -> int | None:
    """How wide a table may be: `$COLUMNS` if set, else the terminal's; None on a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if sys.stdout.isatty():
            # A terminal that reports no size (a pseudo-terminal nobody sized) is taken
            # as 80 columns wide, as shutil.get_terminal_size does.
            return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _fit(natural: list[int], minimum: list[int], available: int) -> list[int]:
    """Column widths within `available`: the last column first, then the widest, each
    down to its minimum (past that the table is wider than `available`)."""
    if sum(natural) <= available:
        return natural
    last = max(minimum[-1], min(natural[-1], LAST_COLUMN))
    if sum(natural[:-1]) + last <= available:
        return [*natural[:-1], available - sum(natural[:-1])]
    natural = [*natural[:-1], last]
    low, high = 1, max(natural)
    while low < high:  # the largest cap at which the columns fit
        cap = (low + high + 1) // 2
        if sum(min(n, max(cap, m)) for n, m in zip(natural, minimum, strict=True)) <= available:
            low = cap
        else:
            high = cap - 1
    return [min(n, max(low, m)) for n, m in zip(natural, minimum, strict=True)]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None = -1) -> str:
    """Rows under headers, in columns as wide as their widest cell, fitted to `width`.

    `width` defaults to `terminal_width()`; None means no terminal (a pipe). A
    cell too wide for its narrowed column wraps onto further lines of its row;
    a cell longer than `MAX_CELL` (`PIPE_CELL` on a pipe) is cut, ending in "…".
    """
    if width == -1:
        width = terminal_width()
    limit = PIPE_CELL if width is None else MAX_CELL
    cells = [
        [str(h) for h in headers],
        *[[_cell(c, limit) for c in r] for r in rows],
    ]
    natural = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    widths = natural
    if width is not None:
        minimum = [min(n, max(len(h), MIN_COLUMN)) for n, h in zip(natural, cells[0], strict=True)]
        widths = _fit(natural, minimum, width - len(GAP) * (len(headers) - 1))
    lines = []
    for row in cells:
        parts = [
            [cell] if len(cell) <= w else textwrap.wrap(cell, w, break_on_hyphens=False) or [""]
            for cell, w in zip(row, widths, strict=True)
        ]
        for n in range(max(len(p) for p in parts)):
            line = GAP.join(
                (p[n] if n < len(p) else "").ljust(w) for p, w in zip(parts, widths, strict=True)
            )
            lines.append(line.rstrip())
    return "\n".join(lines)


_LINE_BREAKS = re.compile(r"[ \t]*(?:\r?\n[ \t]*)+")


def _cell(value: Any, limit: int) -> str:
    """A cell's text on one line (a row never breaks where its text did: each line break
    becomes a space), every control character shown (`printable`), and at most `limit`
    characters, the last of them "…" when it is cut."""
    text = "" if value is None else str(value)
    if "\n" in text:
        text = _LINE_BREAKS.sub(" ", text).strip(" ")
    text = printable(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def emit(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], records: Any, as_json: bool
) -> None:
    """Print a listing on stdout: a table of `rows`, or `records` as JSON (see `to_json`)."""
    if as_json:
        print(to_json(records))
    else:
        print(table(headers, rows))


# -- the run report ------------------------------------------------------------------------------


def task_label(task_id: str, kind: str) -> str:
    """How tables name a task: its name, or for a task without one (whose id is its
    64-hex checksum) `Kind@` and 12 digits of it, as log lines do (`display_name`)."""
    if len(task_id) == 64 and all(c in "0123456789abcdef" for c in task_id):
        return f"{kind}@{task_id[:12]}"
    return task_id


def report_table(report: RunReport, width: int | None = -1, every_task: bool = True) -> str:
    """The end-of-run table: one row per task, or (`every_task=False`) per task that did
    not succeed; an empty string when that leaves no row."""
    results = report if every_task else report.unsuccessful()
    rows = [
        (task_label(r.task_id, r.kind), r.status, r.attempts, duration(r.duration), r.error or "")
        for r in results
    ]
    if not rows:
        return ""
    return table(("TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows, width)


def report_records(report: RunReport) -> dict[str, Any]:
    """The run report as JSON data: the run (`run`: its id in the history, what `opus runs
    show` and `opus report` take; null when nothing ran), then per task its outcome and
    traceback."""
    return {
        "run": report.run_id,
        "command": report.command,
        "context": report.context,
        "ok": report.ok,
        "interrupted": report.interrupted,
        "started_at": iso(report.started_at) if report.started_at else None,
        "duration": round(report.duration, 6),
        "counts": report.counts(),
        "tasks": [
            {
                "task": r.task_id,
                "kind": r.kind,
                "status": r.status.value,
                "attempts": r.attempts,
                "duration": round(r.duration, 6),
                "error": r.error,
                "traceback": r.traceback,
            }
            for r in report
        ],
    }
