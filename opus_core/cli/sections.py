"""What `opus run` and `opus runs show` print after the results, as pytest does: the
FAILURES (each traceback cut to the task's own frames in `--tb=short`) and the slowest
durations (`--durations N`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opus_core.results import TaskStatus

if TYPE_CHECKING:
    from opus_core.results import RunReport, TaskResult

SHORT_FRAMES = 5
"""How many of a traceback's last frames `--tb=short` shows."""


def failures_section(report: RunReport, style: str = "short", width: int | None = None) -> str:
    """The tasks that failed or timed out, each with its traceback in `style`, as pytest's
    FAILURES: "short" the last frames and the exception, "long" all of it, "line" one
    line per task, "no" nothing (an empty string)."""
    from opus_core.cli.output import printable, task_label, terminal_width

    failed = [
        r for r in report.unsuccessful() if r.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT)
    ]
    if not failed or style == "no":
        return ""
    width = min(width or terminal_width() or 80, 120)
    if style == "line":
        return "\n".join(_one_line(r) for r in failed)
    parts = [_rule(" FAILURES ", "=", width)]
    for result in failed:
        tries = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
        name = printable(task_label(result.task_id, result.kind))
        parts.append(_rule(f" {name} ({result.status}, {tries}) ", "_", width))
        if result.traceback:
            text = result.traceback if style == "long" else short_traceback(result.traceback)
        else:
            text = result.error or result.status.value
        parts.append("\n".join(printable(line) for line in text.split("\n")))
    return "\n".join(parts)


def durations_section(
    tasks: Sequence[Mapping[str, Any]], count: int, started_at: float | None, width: int = 0
) -> str:
    """pytest's "slowest durations": the `count` slowest of a run's `tasks` (as the run
    history keeps them; every task with 0), slowest first, each with the seconds it
    waited for its dependencies (from `started_at`, the run's start, to when the last one
    ended) and then for a worker (to its first start)."""
    from opus_core.cli.output import duration, printable, table, task_label, terminal_width
    from opus_core.persistence.base import finite_number

    timed = [
        (seconds, task)
        for task in tasks
        if (seconds := finite_number(task.get("duration"))) is not None and task.get("attempts")
    ]
    timed.sort(key=lambda pair: pair[0], reverse=True)
    shown = timed[:count] if count else timed
    if not shown:
        return ""

    def waited(since: float | None, until: object) -> str:
        end = finite_number(until)
        return duration(max(end - since, 0.0)) if since is not None and end is not None else "-"

    rows = [
        (
            duration(seconds),
            printable(task_label(str(task.get("name")), str(task.get("kind")))),
            waited(started_at, task.get("ready_at")),
            waited(finite_number(task.get("ready_at")), task.get("started_at")),
        )
        for seconds, task in shown
    ]
    width = min(width or terminal_width() or 80, 120)
    title = f" slowest {len(shown)} durations " if count else " durations "
    headers = ("DURATION", "TASK", "WAITED FOR DEPENDENCIES", "THEN FOR A WORKER")
    return _rule(title, "=", width) + "\n" + table(headers, rows)


def _rule(title: str, fill: str, width: int) -> str:
    side = max(3, (width - len(title)) // 2)
    return f"{fill * side}{title}{fill * side}"


def _one_line(result: TaskResult) -> str:
    """`name: file:line: Error: message` (where it was raised, when the traceback says)."""
    from opus_core.cli.output import printable, task_label

    where = ""
    for line in reversed((result.traceback or "").splitlines()):
        stripped = line.strip()
        if stripped.startswith('File "') and ", line " in stripped:
            path, _, rest = stripped[len('File "') :].partition('", line ')
            where = f"{path}:{rest.split(',')[0]}: "
            break
    name = task_label(result.task_id, result.kind)
    return printable(f"{name}: {where}{result.error or result.status.value}")


def short_traceback(text: str, frames: int = SHORT_FRAMES) -> str:
    """The last exception of a formatted traceback with its last `frames` frames.

    The frames above the task's own code (the runner and opus calling the
    processor) are left out first; exceptions it was chained from are summed
    up in one line.
    Text that is not a traceback is returned as it is.
    """
    lines = text.splitlines()
    header = "Traceback (most recent call last):"
    starts = [i for i, line in enumerate(lines) if line == header]
    if not starts:
        return text
    start = starts[-1]
    blocks: list[list[str]] = []
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        if lines[end].startswith('  File "') or not blocks:
            blocks.append([lines[end]])
        else:
            blocks[-1].append(lines[end])
        end += 1
    exception = lines[end:]
    own = [any(f'"{d}' in block[0] for d in _opus_dirs()) for block in blocks]
    for i in range(len(blocks) - 1):  # where opus (or a runner around it) calls the task's code
        if own[i] and not own[i + 1]:
            del blocks[: i + 1]
            break
    hidden = len(blocks) - frames
    shown = blocks[-frames:] if hidden > 0 else blocks
    out = []
    if len(starts) > 1:
        chained = len(starts) - 1
        out.append(f"({chained} chained exception(s) before this one; --tb=long shows them)")
    out.append(header)
    if hidden > 0:
        out.append(f"  ... {hidden} frame(s) above (--tb=long shows them)")
    for block in shown:
        out.extend(block)
    out.extend(exception)
    return "\n".join(out)


def _opus_dirs() -> tuple[str, ...]:
    """Where opus's own modules are: their frames say nothing about a task's failure."""
    import os

    import opus_core

    return (os.path.dirname(opus_core.__file__) + os.sep,)


def output_section(tasks: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """What each attempt of `tasks` printed and logged, as the run history keeps it: a
    rule per task, and one per attempt and stream (stdout, stderr, log), as pytest's
    "Captured stdout call"; an empty string when none printed anything."""
    from opus_core.capture import STREAMS
    from opus_core.cli.output import printable, task_label, terminal_width

    width = min(width or terminal_width() or 80, 120)
    parts: list[str] = []
    for task in tasks:
        attempts = [
            attempt
            for attempt in task.get("attempt_log") or ()
            if isinstance(attempt, Mapping) and isinstance(attempt.get("output"), Mapping)
        ]
        if not attempts:
            continue
        name = printable(task_label(str(task.get("name")), str(task.get("kind"))))
        parts.append(_rule(f" output of {name} ", "=", width))
        for attempt in attempts:
            output = attempt["output"]
            for stream in STREAMS:
                text = output.get(stream)
                if not isinstance(text, str) or not text:
                    continue
                title = f" attempt {attempt.get('attempt')} ({attempt.get('status')}): {stream} "
                parts.append(_rule(printable(title), "-", width))
                parts.append("\n".join(printable(line) for line in text.rstrip("\n").split("\n")))
    return "\n".join(parts)
