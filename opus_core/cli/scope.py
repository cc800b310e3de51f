"""Nothing in scope: what `opus run`, `opus run --dry-run`, `opus tasks` and `opus graph`
say (exit status 5) when no task is selected or there is no project, as pytest does when
it collects no test."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opus_core.engine import Tasks
    from opus_core.graph import Plan
    from opus_core.manifest import Task

NOTHING_IN_SCOPE = 5
"""The exit status of a run with no task in scope (as pytest's "no tests collected")."""

NO_PROJECT = (
    "opus: nothing to run: no opus.toml here or in any parent folder; "
    "`opus config init` writes a starter one (or name one with --config)\n"
)
"""What `opus run`, `opus tasks` and `opus graph` say (exit status 5) outside a project."""


def nothing_in_scope(tasks: Tasks, plan: Plan, args: argparse.Namespace) -> str:
    """Why no task is in scope, and what the tasks do use (stderr of exit status 5)."""
    command, context = args.command, args.context
    config = getattr(tasks, "config", None)
    if not tasks.tasks:
        if config is None or config.project is None:
            return NO_PROJECT
        return (
            f"opus: nothing to run: {config.project} has no tasks "
            "(add [[tasks]], or manifest files in [opus] manifests)\n"
        )
    considered = [task for task, _ in plan.excluded]
    if not considered:
        return f"opus: nothing to run: {_selection(args) or 'the selection'} selects no task\n"
    commands, contexts, anywhere = _scopes(tasks, considered)
    selected = " selected" if args.names or getattr(args, "keyword", None) else ""
    lines = [
        f"opus: nothing to run: none of the {len(considered)}{selected} task(s) is in scope "
        f"for command {command!r} in context {context!r}"
    ]
    lines.append(f"  commands the tasks use: {_listing(commands)}{_close(command, commands)}")
    where = _listing(contexts) if contexts else ""
    if anywhere:
        where += ("; " if where else "") + f"{anywhere} task(s) run in any context"
    lines.append(f"  contexts the tasks use: {where or 'none'}{_close(context, contexts)}")
    lines.append("  (`opus run --dry-run` shows why each task is left out)")
    return "\n".join(lines) + "\n"


def _selection(args: argparse.Namespace) -> str:
    """`NAME a b and -k 'expr'`, as the command line chose (empty when it chose nothing)."""
    chosen = " ".join(args.names) if args.names else ""
    keyword = getattr(args, "keyword", None)
    parts = (
        chosen and f"NAME {chosen}",
        keyword is not None and f"-k {getattr(keyword, 'text', keyword)!r}",
    )
    return " and ".join(part for part in parts if part)


def _scopes(tasks: Tasks, considered: list[Task]) -> tuple[set[str], set[str], int]:
    """The commands and the contexts `considered` run in, and how many run in any context."""
    commands: set[str] = set()
    contexts: set[str] = set()
    anywhere = 0
    for task in considered:
        meta = task.meta
        processor = tasks.processors.get((task.kind, task.version))
        supported = set(getattr(processor, "commands", ()) or ())
        usable = supported if meta.commands is None else supported & set(meta.commands)
        commands |= usable - set(meta.exclude_commands)
        if meta.contexts is None:
            anywhere += 1
        else:
            contexts |= set(meta.contexts) - set(meta.exclude_contexts)
    return commands, contexts, anywhere


def _listing(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _close(name: str, names: set[str]) -> str:
    from opus_core.errors import did_you_mean

    return "" if name in names else did_you_mean(name, sorted(names))
