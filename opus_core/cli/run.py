"""`opus run`: run the configuration's tasks, with progress and a summary."""

from __future__ import annotations

import argparse
import sys

from opus_core.cli.output import report_table, table
from opus_core.engine import Tasks
from opus_core.manifest import display_name
from opus_core.plugin.defaults import KeywordSelection, Selection


def run(args: argparse.Namespace) -> int:
    """Run the tasks; 0 when all succeeded, 1 when any did not, 130/143 when stopped."""
    tasks = Tasks.from_config(getattr(args, "config", None), runner=args.runner)
    manager = tasks.manager()
    if args.names:
        manager.register(Selection(args.names), name="builtin.selection", core=True)
    if getattr(args, "keyword", None) is not None:
        manager.register(KeywordSelection(args.keyword), name="builtin.keywords", core=True)
    if args.dry_run:
        return dry_run(tasks, args.command, args.context)
    if sys.stderr.isatty():
        from opus_core.cli.progress import Progress

        manager.register(Progress(sys.stderr), name="builtin.progress", core=True)
    report = tasks.process_context(command=args.command, context=args.context, resume=args.resume)
    print(report_table(report))
    print(report.summary() + (" (interrupted)" if report.interrupted else ""))
    if report.interrupted:
        from opus_core.cli import interrupted_status

        status = interrupted_status()
    else:
        status = 0 if report.ok else 1
    _leave_abandoned_threads(status)
    return status


def _leave_abandoned_threads(status: int) -> None:
    """End opus now if task threads it stopped waiting for still run.

    A Python thread cannot be killed: a task that timed out or was stopped on a
    thread runner runs on, and the interpreter would wait for it at exit — for
    ever, if it never returns. The run is over and its records are saved, so
    opus exits with its status and leaves those threads behind, saying so.
    """
    import os
    import threading

    main = threading.main_thread()
    left = [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
    if not left:
        return
    sys.stderr.write(
        f"opus: {len(left)} task thread(s) that cannot be killed were still running; "
        "exiting without waiting for them\n"
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def dry_run(tasks: Tasks, command: str, context: str) -> int:
    """Print what would run, in order, with dependencies, and what is left out and why."""
    plan = tasks.plan(command, context)
    rows = []
    for position, task in enumerate(plan.tasks, start=1):
        deps = ", ".join(display_name(plan.tasks[d]) for d in plan.deps[position - 1])
        rows.append((position, display_name(task), task.kind, deps or "-"))
    print(f"plan for command {command!r} in context {context!r}: {len(plan.tasks)} task(s)")
    if rows:
        print(table(("#", "TASK", "KIND", "AFTER"), rows))
    if plan.excluded:
        print(f"left out: {len(plan.excluded)} task(s)")
        print(table(("TASK", "WHY"), [(display_name(t), why) for t, why in plan.excluded]))
    return 0
