"""`opus runs list|show|prune`: the run history the configured persistence keeps.

Tables for people (local times, short durations), `--json` for programs
(timestamps in ISO 8601, UTC). A run still "running" whose process is gone is
shown as "interrupted" (see `opus_core.history.displayed_status`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from opus_core.cli.arguments import count_argument, durations_argument, traceback_argument
from opus_core.cli.commands import COMMAND_HELP
from opus_core.errors import OpusError
from opus_core.persistence.base import finite_number

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext

ALL = 2**63 - 1
"""A count of runs this large or larger (`--limit`, `--keep`) means all of them: SQLite's
integers stop here."""


def add_command(commands: Commands) -> None:
    """`opus runs list|show|prune`: their arguments, and `list_runs`, `show` and `prune` to
    handle them."""
    runs = commands.add_group(
        "runs",
        COMMAND_HELP["runs"],
        default="list",
        description="Every opus run is recorded by the configured persistence.",
    )
    listing = runs.add("list", list_runs, help="the runs, newest first")
    listing.add_argument(
        "--limit", metavar="N", type=count_argument, default=None, help="at most the N newest runs"
    )
    listing.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    one = runs.add(
        "show",
        show,
        help="one run and each of its tasks",
        description="One run: how it ended, each task's status, attempts and error, and "
        "the tracebacks of the tasks that failed (as opus run ends).",
    )
    one.add_argument(
        "run",
        metavar="RUN",
        nargs="?",
        default="latest",
        help="latest (the default), a run id, or the beginning of one",
    )
    one.add_argument(
        "task",
        metavar="TASK",
        nargs="?",
        default=None,
        help="one task of the run: its attempts, waits, dependencies and traceback",
    )
    traceback_argument(one)
    durations_argument(one)
    one.add_argument(
        "--output",
        action="store_true",
        help="what each attempt printed and logged (its stdout, stderr and log lines, "
        "as kept: the head and tail of each)",
    )
    one.add_argument("--json", action="store_true", help="print JSON (times in ISO 8601)")
    forget = runs.add("prune", prune, help="forget every run but the newest N")
    forget.add_argument(
        "--keep",
        metavar="N",
        type=count_argument,
        required=True,
        help="how many of the newest to keep",
    )


def _took(run: dict[str, Any]) -> float | None:
    started, ended = finite_number(run.get("started_at")), finite_number(run.get("ended_at"))
    return ended - started if started is not None and ended is not None else None


def _counts(run: dict[str, Any]) -> str:
    from opus_core.results import TaskStatus

    counts = run.get("counts") or {}
    if not isinstance(counts, dict):
        return "-"
    order = [status.value for status in TaskStatus]  # as the end of `opus run` says them
    ranked = sorted(counts.items(), key=lambda item: (_rank(order, item[0]), str(item[0])))
    return ", ".join(f"{n} {status}" for status, n in ranked if n) or "-"


def _rank(order: list[str], status: object) -> int:
    return order.index(status) if status in order else len(order)


def _where(run: dict[str, Any]) -> str:
    return f"{run.get('command', '?')}/{run.get('context', '?')}"


# -- list ------------------------------------------------------------------------------------


def list_runs(context: CommandContext) -> int:
    """The runs, newest first: id, status, start, duration, command/context, counts."""
    from opus_core.cli.output import duration, emit, timestamp
    from opus_core.history import displayed_status, for_json

    args = context.args
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise OpusError(f"--limit needs a number of runs to show, 1 or more, not {limit}")
    if limit is not None and limit >= ALL:
        limit = None
    runs = context.persistence.list_runs(limit=limit)
    for run in runs:
        run["status"] = displayed_status(run)
    as_json = getattr(args, "json", False)
    if not runs and not as_json:
        print("no runs recorded (`opus run` records one)")
        return 0
    rows = [
        (
            run.get("id"),
            run["status"],
            timestamp(finite_number(run.get("started_at"))),
            duration(_took(run)),
            _where(run),
            _counts(run),
        )
        for run in runs
    ]
    records = [{**for_json(run), "duration": _took(run)} for run in runs]
    emit(("RUN", "STATUS", "STARTED", "DURATION", "COMMAND", "TASKS"), rows, records, as_json)
    return 0


# -- show ------------------------------------------------------------------------------------


def show(context: CommandContext) -> int:
    """One run (`latest` by default): what ran, how it ended, and each task."""
    from opus_core.cli.output import duration, printable, table, task_label, timestamp, to_json
    from opus_core.cli.sections import durations_section, output_section
    from opus_core.history import find_run, for_json

    args = context.args
    run = find_run(context.persistence, getattr(args, "run", None) or "latest")
    name = getattr(args, "task", None)
    if name is not None:
        return _show_task(run, _task_of(run, name), args)
    if getattr(args, "json", False):
        print(to_json({**for_json(run), "duration": _took(run)}))
        return 0
    started = finite_number(run.get("started_at"))
    lines = [
        f"run:         {run.get('id')}",
        f"status:      {run.get('status')}",
        f"command:     {run.get('command')} (context {run.get('context')})",
        f"config:      {run.get('config') or '-'}",
        f"started:     {timestamp(started)}",
        f"ended:       {timestamp(finite_number(run.get('ended_at')))}",
        f"duration:    {duration(_took(run))}",
        f"runner:      {run.get('runner')}",
        f"persistence: {run.get('persistence')}",
        f"pid:         {run.get('pid')}",
        f"tasks:       {_counts(run)}",
    ]
    print("\n".join(printable(line) for line in lines))
    tasks = run.get("tasks") or []
    if tasks:
        rows = [
            (
                task_label(str(task.get("name")), str(task.get("kind"))),
                task.get("status"),
                task.get("attempts"),
                duration(finite_number(task.get("duration"))),
                task.get("error") or "",
            )
            for task in tasks
        ]
        print()
        print(table(("TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"), rows))
        failures = _failures(tasks, getattr(args, "tb", "short"))
        if failures:
            print(failures)
        count = getattr(args, "durations", None)
        section = "" if count is None else durations_section(tasks, count, started)
        if section:
            print(section)
        if getattr(args, "output", False):
            print(output_section(tasks) or "no task printed or logged anything")
    return 0


def _task_of(run: dict[str, Any], name: str) -> dict[str, Any]:
    """The task `name` of `run`; an `OpusError` saying which there are when it has none."""
    from opus_core.errors import did_you_mean

    tasks = run.get("tasks") or []
    for task in tasks:
        if task.get("name") == name:
            return dict(task)
    names = [str(task.get("name")) for task in tasks]
    hint = did_you_mean(name, names) or (
        f"; its tasks: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        if names
        else "; it ran no task"
    )
    raise OpusError(f"run {run.get('id')} has no task {name!r}{hint}")


def _show_task(run: dict[str, Any], task: dict[str, Any], args: Any) -> int:
    """`opus runs show RUN TASK`: one task — how it ended, when it was ready, started and
    ended, what it depended on, each attempt, and its traceback (`--tb`)."""
    from opus_core.cli.output import duration, printable, timestamp, to_json
    from opus_core.cli.sections import output_section, short_traceback
    from opus_core.history import for_json

    if getattr(args, "json", False):  # times in ISO 8601, the attempts' too
        print(to_json({"run": run.get("id"), **for_json({"tasks": [task]})["tasks"][0]}))
        return 0
    ready = finite_number(task.get("ready_at"))
    first = finite_number(task.get("started_at"))
    waited_deps = _between(run.get("started_at"), ready)
    waited_worker = _between(ready, first)
    lines = [
        f"task:         {task.get('name')} ({task.get('kind')})",
        f"run:          {run.get('id')}",
        f"status:       {task.get('status')}",
        f"attempts:     {task.get('attempts')}",
        f"ready:        {timestamp(ready)} (waited {duration(waited_deps)} for dependencies)",
        f"started:      {timestamp(first)} (waited {duration(waited_worker)} for a worker)",
        f"ended:        {timestamp(finite_number(task.get('ended_at')))}",
        f"duration:     {duration(finite_number(task.get('duration')))}",
        f"dependencies: {', '.join(map(str, task.get('dependencies') or [])) or '-'}",
        f"error:        {task.get('error') or '-'}",
    ]
    print("\n".join(printable(line) for line in lines))
    log = task.get("attempt_log") or []
    if log:
        print("\nattempts:")
        for attempt in log:
            took = _between(attempt.get("started_at"), attempt.get("ended_at"))
            error = f": {attempt.get('error')}" if attempt.get("error") else ""
            print(
                printable(
                    f"  {attempt.get('attempt')}. {attempt.get('status')} "
                    f"at {timestamp(finite_number(attempt.get('started_at')))} "
                    f"in {duration(took)}{error}"
                )
            )
    trace = task.get("traceback")
    style = getattr(args, "tb", "short")
    if isinstance(trace, str) and trace and style != "no":
        text = trace if style == "long" else short_traceback(trace)
        if style == "line":
            text = text.strip().splitlines()[-1]
        print("\ntraceback:")
        print("\n".join(printable(line) for line in text.split("\n")))
    if getattr(args, "output", False):
        print()
        print(output_section([task]) or "it printed and logged nothing")
    return 0


def _between(start: object, end: object) -> float | None:
    first, last = finite_number(start), finite_number(end)
    return None if first is None or last is None else max(last - first, 0.0)


def _failures(tasks: list[dict[str, Any]], style: str) -> str:
    """The FAILURES section `opus run` ends with, from the run's saved tasks."""
    from opus_core.cli.sections import failures_section
    from opus_core.results import RunReport, TaskResult, TaskStatus

    statuses = {status.value: status for status in TaskStatus}
    results = {}
    for task in tasks:
        status = statuses.get(str(task.get("status")))
        if status is None or status not in (TaskStatus.FAILED, TaskStatus.TIMED_OUT):
            continue
        name = str(task.get("name"))
        attempts = task.get("attempts")
        results[name] = TaskResult(
            task_id=name,
            kind=str(task.get("kind")),
            status=status,
            attempts=attempts if isinstance(attempts, int) else 0,
            error=str(task["error"]) if task.get("error") else None,
            traceback=str(task["traceback"]) if task.get("traceback") else None,
        )
    return failures_section(RunReport("", "", results), style) if results else ""


# -- prune -----------------------------------------------------------------------------------


def prune(context: CommandContext) -> int:
    """Forget every run but the `--keep N` newest."""
    keep = context.args.keep
    if keep is None or keep < 0:
        raise OpusError(f"--keep needs a number of runs to keep, 0 or more, not {keep!r}")
    removed = context.persistence.prune_runs(min(keep, ALL))
    sys.stdout.write(f"pruned {removed} run(s), kept at most {keep}\n")
    return 0
