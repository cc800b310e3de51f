"""`opus tasks`: the tasks in scope for a command and context, and those left out and why.

`scope()` is also what `opus graph` draws: both plan through `Tasks.plan`, so
`NAME ...`, `-k EXPR` and every plugin's `opus_modify_tasks` apply as they do
for `opus run`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opus_core.cli.arguments import selection_arguments
from opus_core.cli.commands import COMMAND_HELP

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext
    from opus_core.engine import Tasks
    from opus_core.graph import Plan
    from opus_core.manifest import Task


@dataclass(slots=True)
class ScopedTask:
    """One task as the listing commands show it; `after` holds positions in `Scope.tasks`."""

    task: Task
    name: str
    in_scope: bool
    why: str | None = None
    after: list[int] = field(default_factory=list)

    @property
    def labels(self) -> str:
        """`key=value, ...`, or `-`."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.task.meta.labels.items())) or "-"


@dataclass(slots=True)
class Scope:
    """The tasks of a plan: those in scope in run order, then those out of scope.

    The dependencies of a task in scope are the plan's; those of a task out of
    scope are what its manifest names, among the tasks shown. `deselected`
    counts the tasks `NAME ...`, `-k` or a plugin removed before planning.
    """

    command: str
    context: str
    tasks: list[ScopedTask]
    deselected: int
    plan: Plan | None = None
    """The plan the tasks come from (None for a scope made by hand)."""
    engine: Tasks | None = None
    """The engine that planned it."""

    @property
    def in_scope(self) -> int:
        """How many tasks would run."""
        return sum(1 for t in self.tasks if t.in_scope)

    def summary(self) -> str:
        """`N task(s) in scope for command C in context X; M out of scope; K not selected`."""
        out = len(self.tasks) - self.in_scope
        text = (
            f"{self.in_scope} task(s) in scope for command {self.command!r} "
            f"in context {self.context!r}"
        )
        if out:
            text += f"; {out} out of scope"
        if self.deselected:
            text += f"; {self.deselected} not selected"
        return text


def scope(context: CommandContext) -> Scope:
    """Plan the configuration for `--command` and `--context`, with `NAME ...` and `-k`."""
    from opus_core.manifest import display_name
    from opus_core.selection import KeywordSelection, Selection

    args = context.args
    engine = context.tasks()
    manager = engine.manager()
    if args.names:
        manager.register(Selection(args.names), name="builtin.selection", core=True)
    if args.keyword is not None:
        manager.register(KeywordSelection(args.keyword), name="builtin.keywords", core=True)
    plan = engine.plan(args.command, args.context)
    shown = [
        ScopedTask(t, display_name(t), True, None, list(d))
        for t, d in zip(plan.tasks, plan.deps, strict=True)
    ]
    shown += [ScopedTask(t, display_name(t), False, why) for t, why in plan.excluded]
    _declared_dependencies(shown)
    return Scope(args.command, args.context, shown, len(engine.tasks) - len(shown), plan, engine)


def outside_a_project(context: CommandContext) -> bool:
    """True, with `opus run`'s one-line hint on stderr, when no `opus.toml` is found.

    `opus tasks` and `opus graph` then exit 5, as `opus run` does (and pytest
    when it collects no test).
    """
    import sys

    from opus_core.cli.scope import NO_PROJECT

    if context.config.project is not None:
        return False
    sys.stderr.write(NO_PROJECT)
    return True


def nothing_in_scope(context: CommandContext, found: Scope) -> int:
    """0 when a task of `found` is in scope, else `opus run`'s reason on stderr and 5."""
    import sys

    from opus_core.cli.scope import NOTHING_IN_SCOPE, nothing_in_scope

    if found.in_scope or found.plan is None or found.engine is None:
        return 0
    sys.stderr.write(nothing_in_scope(found.engine, found.plan, context.args))
    return NOTHING_IN_SCOPE


def _declared_dependencies(shown: list[ScopedTask]) -> None:
    """Fill `after` for tasks out of scope from their manifests: names, then label selectors."""
    by_name = {s.task.meta.name: i for i, s in enumerate(shown) if s.task.meta.name}
    by_label: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(shown):
        for pair in s.task.meta.labels.items():
            by_label[pair].append(i)
    for i, s in enumerate(shown):
        if s.in_scope:
            continue
        meta = s.task.meta
        found = [by_name[n] for n in meta.dependency_names if n in by_name]
        for selector in meta.dependency_selectors:
            candidates = min((by_label.get(pair, []) for pair in selector.labels), key=len)
            found += [
                j
                for j in candidates
                if j != i and all(shown[j].task.meta.labels.get(k) == v for k, v in selector.labels)
            ]
        s.after = list(dict.fromkeys(found))


def add_command(commands: Commands) -> None:
    """`opus tasks`: its arguments, and `tasks` to handle it."""
    parser = commands.add(
        "tasks",
        tasks,
        help=COMMAND_HELP["tasks"],
        description="List the tasks in scope for a command and context, in run order, with "
        "their kind, labels and dependencies; then those out of scope and why.",
    )
    selection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def tasks(context: CommandContext) -> int:
    """List the tasks in scope (kind, labels, dependencies), then those out of scope and why;
    exit status 5, as `opus run`'s, when none is in scope or there is no `opus.toml`."""
    from opus_core.cli.output import emit
    from opus_core.cli.scope import NOTHING_IN_SCOPE

    if outside_a_project(context):
        return NOTHING_IN_SCOPE
    args = context.args
    found = scope(context)
    names = [s.name for s in found.tasks]
    rows = [
        (
            s.name,
            s.task.kind,
            s.labels,
            ", ".join(names[j] for j in s.after) or "-",
            "in" if s.in_scope else f"out: {s.why}",
        )
        for s in found.tasks
    ]
    records = [
        {
            "name": s.task.meta.name,
            "id": s.task.task_id,
            "kind": s.task.kind,
            "version": s.task.version,
            "labels": dict(s.task.meta.labels),
            "dependencies": [names[j] for j in s.after],
            "resources": dict(s.task.meta.resources),
            "priority": s.task.meta.priority,
            "inputs": list(s.task.meta.inputs),
            "outputs": list(s.task.meta.outputs),
            "cached": s.task.meta.cached,
            "in_scope": s.in_scope,
            "why": s.why,
        }
        for s in found.tasks
    ]
    emit(("TASK", "KIND", "LABELS", "DEPENDS ON", "SCOPE"), rows, records, args.json)
    if not args.json:
        print(found.summary())
    return nothing_in_scope(context, found)
