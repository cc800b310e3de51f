"""The HTML report of a run: one self-contained file a browser opens without a network.

`render_report(run)` turns a run from the run history (the dict
`opus_core.history.find_run` returns) into one HTML page: a header with the
run's id, command, context, status, counts and duration; the task graph
coloured by status; a timeline of every attempt, packed into lanes that show
how many ran at once; and a table of the tasks. Clicking a task anywhere shows
its error, traceback, attempts and what each attempt printed and logged.

The page fetches nothing: its script (`report.js`) and style (`report.css`),
package data beside this module, are inlined, and a Content-Security-Policy
allows those two by hash and nothing else. The run travels as JSON in a
`<script type="application/json">` element, escaped so that no task name or
error text can close it; the script writes every such string with
`textContent`, never as markup.

The layout work that does not depend on what the reader clicks is done here:
each task's layer (the longest chain of dependencies before it) and each
attempt's lane (greedy interval partitioning: an attempt takes the first lane
free when it starts). The script lays out whatever part of the graph is shown, a
column per layer, with a dummy slot in every column a long edge crosses so that
no edge is drawn under a box; above `GRAPH_LIMIT` tasks it draws groups of tasks
instead of boxes. Timeline bars carry their task's name where it fits.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import html
import json
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from opus_core.errors import OpusError
from opus_core.files import atomic_write
from opus_core.persistence.base import finite_number

__all__ = [
    "GRAPH_LIMIT",
    "ReportError",
    "embed_json",
    "pack_lanes",
    "render_report",
    "report_data",
    "report_destination",
    "task_layers",
    "write_report",
]

GRAPH_LIMIT = 300
"""Above this many tasks the graph shows groups (by layer and kind) that expand on click."""


class ReportError(OpusError):
    """The report could not be written: the file is not writable, or the run is unusable."""


# -- layout that does not depend on the reader -----------------------------------------------


def pack_lanes(intervals: Sequence[tuple[float, float]]) -> tuple[list[int], int]:
    """Each interval's lane, and how many lanes: an interval takes the lowest-numbered lane
    free at its start (greedy interval partitioning, optimal: the number of lanes is the most
    intervals that overlap at one instant). An interval ending when another starts frees its
    lane for it."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][0], intervals[i][1]))
    busy: list[tuple[float, int]] = []  # (end, lane) of the intervals still running
    free: list[int] = []
    lanes = [0] * len(intervals)
    count = 0
    for i in order:
        start, end = intervals[i]
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane = count
            count += 1
        lanes[i] = lane
        heapq.heappush(busy, (max(end, start), lane))
    return lanes, count


def task_layers(dependencies: Sequence[Sequence[int]]) -> list[int]:
    """Each task's layer: 0 without dependencies, else one more than its deepest dependency
    (longest-path layering). `dependencies[i]` holds the indices task `i` depends on; an
    index out of range is ignored, and a cycle (which a plan never holds) is broken where
    it is found rather than looping."""
    count = len(dependencies)
    layers = [-1] * count
    on_path = [False] * count
    for root in range(count):
        if layers[root] >= 0:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]  # (task, next dependency to look at)
        on_path[root] = True
        while stack:
            node, position = stack[-1]
            deps = dependencies[node]
            if position < len(deps):
                stack[-1] = (node, position + 1)
                dep = deps[position]
                if 0 <= dep < count and layers[dep] < 0 and not on_path[dep]:
                    on_path[dep] = True
                    stack.append((dep, 0))
                continue
            stack.pop()
            on_path[node] = False
            layers[node] = 1 + max(
                (layers[d] for d in deps if 0 <= d < count and layers[d] >= 0), default=-1
            )
    return layers


# -- what the page receives ------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


OUTPUT_BUDGET = 8_000_000
"""The most characters of task output one page carries (each attempt's is capped too:
`opus_core.capture.KEEP` per stream); the tasks past it say where to read theirs."""

Attempt = tuple[int, int, float, float, str, str | None]
"""One bar of the timeline: task index, attempt number, start, end, status, error."""


def report_data(run: Mapping[str, Any]) -> dict[str, Any]:
    """What the page's script reads: the run's header, and per task its fields, the indices
    of its dependencies, its layer and its attempts (times in seconds from the run's start,
    each with its lane). Raises `ReportError` when `run` is not a run record."""
    if not isinstance(run, Mapping) or not isinstance(run.get("tasks"), list):
        raise ReportError(
            "cannot report on this run: it is not a run record with a list of tasks "
            "(pass what opus_core.history.find_run returns)"
        )
    records: list[Mapping[str, Any]] = [t for t in run["tasks"] if isinstance(t, Mapping)]
    started = finite_number(run.get("started_at"))
    ended = finite_number(run.get("ended_at"))
    attempts = [a for i, record in enumerate(records) for a in _attempts(i, record)]
    known = [t for a in attempts for t in (a[2], a[3]) if not math.isnan(t)]
    origin = min([*([started] if started is not None else []), *known], default=0.0)
    last = max([*([ended] if ended is not None else []), *known], default=origin)
    attempts = [(*a[:3], last if math.isnan(a[3]) else a[3], *a[4:]) for a in attempts]
    lanes, lane_count = pack_lanes([(a[2], a[3]) for a in attempts])
    tasks = _task_fields(records, origin)
    for (task, number, begin, end, status, error), lane in zip(attempts, lanes, strict=True):
        tasks[task]["log"].append(
            [number, round(begin - origin, 6), round(end - origin, 6), status, error, lane]
        )
    header = _header(run, (origin, last), started, ended)
    header["counts"] = _counts(run, tasks)
    header["output_left_out"] = _outputs(records, tasks)
    header["output_budget"] = OUTPUT_BUDGET
    return {"run": header, "tasks": tasks, "lanes": lane_count, "graph_limit": GRAPH_LIMIT}


def _outputs(records: list[Mapping[str, Any]], tasks: list[dict[str, Any]]) -> int:
    """Give each task of the page what its attempts printed and logged (`output`: attempt,
    stream, text), up to `OUTPUT_BUDGET` characters for the whole page; returns how many
    tasks' output was left out past it (`opus runs show RUN TASK --output` has it)."""
    from opus_core.capture import STREAMS

    budget = OUTPUT_BUDGET
    left_out = 0
    for record, fields in zip(records, tasks, strict=True):
        kept: list[list[Any]] = []
        for number, attempt in enumerate(record.get("attempt_log") or (), start=1):
            output = attempt.get("output") if isinstance(attempt, Mapping) else None
            if not isinstance(output, Mapping):
                continue
            which = attempt.get("attempt")
            which = which if isinstance(which, int) and not isinstance(which, bool) else number
            kept.extend(
                [which, stream, output[stream]]
                for stream in STREAMS
                if isinstance(output.get(stream), str) and output[stream]
            )
        size = sum(len(text) for _, _, text in kept)
        if size > budget:
            fields["output_left_out"] = True
            left_out += 1
        else:
            budget -= size
            fields["output"] = kept
    return left_out


def _attempts(i: int, record: Mapping[str, Any]) -> list[Attempt]:
    """The timeline bars of the task `record` (at index `i`): one per attempt of its log, or
    one from the task's own times when it has no log; an attempt still running ends NaN."""
    log = [a for a in record.get("attempt_log") or () if isinstance(a, Mapping)]
    if not log:  # a record without its attempts: one bar from the task's own times
        begin = finite_number(record.get("started_at"))
        end = finite_number(record.get("ended_at"))
        if begin is None or end is None:
            return []
        log = [
            {
                "attempt": record.get("attempts") or 1,
                "started_at": begin,
                "ended_at": end,
                "status": record.get("status"),
                "error": record.get("error"),
            }
        ]
    bars: list[Attempt] = []
    for number, entry in enumerate(log, start=1):
        begin = finite_number(entry.get("started_at"))
        if begin is None:
            continue
        end = finite_number(entry.get("ended_at"))
        attempt = entry.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            attempt = number
        status = str(entry.get("status") or "unknown")
        bars.append(
            (i, attempt, begin, math.nan if end is None else end, status, _text(entry.get("error")))
        )
    return bars


def _task_fields(records: list[Mapping[str, Any]], origin: float) -> list[dict[str, Any]]:
    """Per task, what the page shows of it; times relative to `origin`, its dependencies as
    indices (names of tasks not in the run kept apart), its layer, and an empty log."""
    index = {str(t.get("name")): i for i, t in enumerate(records)}
    dependencies: list[list[int]] = []
    missing: list[list[str]] = []
    for record in records:
        names = [str(n) for n in record.get("dependencies") or ()]
        dependencies.append([index[n] for n in names if n in index])
        missing.append([n for n in names if n not in index])
    layers = task_layers(dependencies)

    def relative(value: Any) -> float | None:
        number = finite_number(value)
        return None if number is None else round(number - origin, 6)

    return [
        {
            "name": str(record.get("name")),
            "kind": str(record.get("kind") or ""),
            "status": str(record.get("status") or "unknown"),
            "attempts": record.get("attempts") or 0,
            "start": relative(record.get("started_at")),
            "end": relative(record.get("ended_at")),
            "duration": finite_number(record.get("duration")),
            "error": _text(record.get("error")),
            "traceback": _text(record.get("traceback")),
            "runner": _text(record.get("runner")),
            "resources": _resources(record.get("resources")),
            "deps": dependencies[i],
            "missing": missing[i],
            "layer": layers[i],
            "log": [],
        }
        for i, record in enumerate(records)
    ]


def _resources(value: Any) -> dict[str, float]:
    """A task's declared needs, as its entry in the history has them (others: none)."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(name): float(need) for name, need in value.items() if finite_number(need) is not None
    }


def _header(
    run: Mapping[str, Any],
    span: tuple[float, float],
    started: float | None,
    ended: float | None,
) -> dict[str, Any]:
    """The run's fields for the page's header; `span` is the first and last time known."""
    origin, last = span
    header: dict[str, Any] = {
        key: _text(run.get(key))
        for key in ("id", "command", "context", "config", "status", "runner", "persistence")
    }
    header.update(
        pid=run.get("pid") if isinstance(run.get("pid"), int) else None,
        started_at=origin if started is None else started,
        ended_at=ended,
        duration=None if ended is None or started is None else round(ended - started, 6),
        span=round(last - origin, 6),
    )
    return header


def _counts(run: Mapping[str, Any], tasks: list[dict[str, Any]]) -> dict[str, int]:
    """How many tasks ended in each status: the run's own counts, else counted here."""
    counts = run.get("counts")
    if not isinstance(counts, Mapping):
        counts = {}
        for task_record in tasks:
            counts[task_record["status"]] = counts.get(task_record["status"], 0) + 1
    return {str(k): v for k, v in counts.items() if isinstance(v, int) and v}


# -- the page --------------------------------------------------------------------------------

_JSON_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def embed_json(data: Any) -> str:
    """`data` as JSON that is safe inside a `<script>` element: `<`, `>` and `&` are written
    as `\\u` escapes (so no `</script>` or `<!--` can appear), and so are U+2028 and U+2029.
    `JSON.parse` reads it back unchanged. Lone surrogates (a file name decoded with
    `surrogateescape`) are written as `\\u` escapes too, so the text encodes as UTF-8;
    the page shows each as U+FFFD."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for character, escape in _JSON_ESCAPES:  # str.replace: far quicker than str.translate
        text = text.replace(character, escape)
    if not text.isascii():
        text = _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text


def _asset(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def render_report(run: Mapping[str, Any]) -> str:
    """The HTML report of `run` (a run record, as `opus_core.history.find_run` returns it),
    as one self-contained page: no file or network is fetched when it opens."""
    data = report_data(run)
    script = _asset("report.js")
    style = _asset("report.css")
    policy = (
        f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    title = f"opus run {data['run']['id'] or ''}".strip()
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="opus">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{style}</style>\n"
        "</head>\n<body>\n"
        '<noscript><p class="noscript">This report draws itself with JavaScript; '
        "allow scripts for this file to see it.</p></noscript>\n"
        f'<script type="application/json" id="opus-run">{embed_json(data)}</script>\n'
        f"<script>{script}</script>\n"
        "</body>\n</html>\n"
    )


def report_destination(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """Where a report written to `path` goes, and whether it replaces a file there as a
    whole (True) or is written into what is there (False). Raises `ReportError` naming
    `path` when nothing can be written there.

    A missing path or a regular file is replaced atomically (a hidden `.partial` file
    beside it, then a rename). A symlink is followed: the file it points to is replaced
    (or created, for a dangling link), never the link. What is not a regular file — a
    terminal, `/dev/null`, a FIFO, a file descriptor such as `/dev/stdout` — is written
    into directly, as a shell's `>` would; a socket or a directory is refused."""
    given = os.fspath(path)
    try:
        info: os.stat_result | None = os.stat(given)
    except FileNotFoundError:
        info = None
    except OSError as exc:  # a loop of links, a file used as a folder, no permission
        raise ReportError(
            f"cannot write the report to {given}: {exc.strerror or exc}; choose another file"
        ) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise ReportError(
            f"cannot write the report to {given}: it is a directory; "
            "name a file, as in -o report.html"
        )
    if info is not None and stat.S_ISSOCK(info.st_mode):
        raise ReportError(
            f"cannot write the report to {given}: it is a socket; name a file, as in -o report.html"
        )
    if info is not None and (not stat.S_ISREG(info.st_mode) or _through_descriptor(given)):
        return Path(given), False
    return Path(os.path.realpath(given)), True


def _through_descriptor(path: str) -> bool:
    """Whether `path` names an open file descriptor (`/dev/stdout`, `/dev/fd/3`,
    `/proc/self/fd/1`): its links lead into /proc, whose links name the file the
    descriptor has open — which a shell may have opened to append."""
    current = os.path.abspath(path)
    for _ in range(40):  # as many links as the kernel follows
        folder = os.path.realpath(os.path.dirname(current))
        if folder == "/proc" or folder.startswith("/proc/"):
            return True
        current = os.path.join(folder, os.path.basename(current))
        if not os.path.islink(current):
            return False
        current = os.path.join(folder, os.readlink(current))
    return False


def write_report(run: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report of `run` to `path`; returns the path. A regular file (or the file a
    symlink points to) is replaced as a whole, never left half-written; a device, FIFO or
    descriptor is written into (see `report_destination`). Raises `ReportError` naming the
    file when it cannot be written."""
    given = Path(path)
    page = render_report(run).encode("utf-8", errors="replace")
    target, replace = report_destination(given)
    try:
        if replace:
            atomic_write(target, page)  # keeps the mode of the file it replaces
        else:
            _write_into(target, page)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        shown = os.fspath(given)
        if target != given and replace:
            shown += f" (a symlink to {os.fspath(target)})"
        advice = "; choose a file in a folder you can write to" if replace else ""
        raise ReportError(f"cannot write the report to {shown}: {reason}{advice}") from None
    return given


def _write_into(target: Path, page: bytes) -> None:
    """Write `page` into the device, FIFO or descriptor `target` (appending to what a
    descriptor has open, never truncating it)."""
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        view = memoryview(page)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
