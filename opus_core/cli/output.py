"""Output shared by every command: tables and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opus_core.report import RunReport


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
            r.status,
            r.attempts,
            f"{r.duration:.2f}s",
            (r.error or "")[:100],
        )
        for r in report
    ]
    return table(("TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows)
