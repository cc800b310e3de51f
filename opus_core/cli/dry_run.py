"""`opus run --dry-run`: the plan — order, dependencies, what `--resume` would restore, and
each task left out with the reason — as a table or as JSON; nothing runs."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from opus_core.cli.scope import NOTHING_IN_SCOPE, nothing_in_scope
from opus_core.plugin.manager import warn

if TYPE_CHECKING:
    from opus_core.engine import Tasks
    from opus_core.graph import Plan


def dry_run(
    tasks: Tasks,
    command: str,
    context: str,
    as_json: bool = False,
    args: argparse.Namespace | None = None,
) -> int:
    """Print what would run, in order, with dependencies, and what is left out and why.

    Exit status 5 (with the reason on stderr) when nothing is in scope.
    """
    from opus_core.cli.output import table, to_json
    from opus_core.manifest import display_name

    plan = tasks.plan(command, context)
    for warning in plan.warnings:
        warn(warning)
    resume = bool(getattr(args, "resume", False))
    forced = getattr(args, "force", None)
    force: bool | list[str] = False if forced is None else (forced or True)
    explain = bool(getattr(args, "explain", False))
    restored = tasks.restored(plan, resume, force, explain) or [None] * len(plan.tasks)
    if as_json:
        print(to_json(plan_records(plan, restored)))
    else:
        rows = []
        for position, task in enumerate(plan.tasks, start=1):
            deps = ", ".join(display_name(plan.tasks[d]) for d in plan.deps[position - 1])
            then = "restore" if restored[position - 1] is not None else "run"
            rows.append((position, display_name(task), task.kind, deps or "-", then))
        print(f"plan for command {command!r} in context {context!r}: {len(plan.tasks)} task(s)")
        if rows:
            print(table(("#", "TASK", "KIND", "AFTER", "WOULD"), rows))
        would = sum(1 for values in restored if values is not None)
        if would:
            print(f"{would} task(s) would be restored, not run")
        if plan.excluded:
            print(f"left out: {len(plan.excluded)} task(s)")
            print(table(("TASK", "WHY"), [(display_name(t), why) for t, why in plan.excluded]))
    if not plan.tasks:
        if args is None:
            args = argparse.Namespace(command=command, context=context, names=[], keyword=None)
        sys.stderr.write(nothing_in_scope(tasks, plan, args))
        return NOTHING_IN_SCOPE
    return 0


def plan_records(plan: Plan, restored: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """The plan as JSON data: the tasks in order with what each runs after and whether it
    would be restored rather than run, and those left out."""
    from opus_core.manifest import display_name

    restored = restored or [None] * len(plan.tasks)
    return {
        "command": plan.command,
        "context": plan.context,
        "tasks": [
            {
                "position": position,
                "task": display_name(task),
                "kind": task.kind,
                "version": task.version,
                "after": [display_name(plan.tasks[d]) for d in plan.deps[position - 1]],
                "restored": restored[position - 1] is not None,
            }
            for position, task in enumerate(plan.tasks, start=1)
        ],
        "excluded": [{"task": display_name(t), "why": why} for t, why in plan.excluded],
    }
