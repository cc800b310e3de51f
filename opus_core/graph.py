"""Planning a run: which tasks are in scope, what each depends on, and in what order.

Everything that can be known before a task runs is checked here, so a bad
graph fails before anything starts. The cost is O(tasks + dependencies): names
and labels are looked up in indexes built once per plan.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opus_core.errors import CycleError, DependencyError, did_you_mean
from opus_core.manifest import Task
from opus_core.processor import TaskProcessor


@dataclass
class Plan:
    """Tasks in scope for one command and context, in a topological order.

    `deps[i]` and `dependents[i]` are positions in `tasks`; every dependency of
    `tasks[i]` comes before it. `excluded` pairs each task out of scope with why.
    """

    command: str
    context: str
    tasks: list[Task]
    deps: list[list[int]]
    dependents: list[list[int]]
    excluded: list[tuple[Task, str]]
    warnings: list[str] = field(default_factory=list)
    """What planning noticed but allows: a label dependency that no task's labels match."""


def out_of_scope_reason(
    task: Task, processor: TaskProcessor, command: str, context: str
) -> str | None:
    """Why `task` does not run for `command` in `context`, or None when it does."""
    meta = task.meta
    if command not in processor.commands:
        return f"its processor {type(processor).__name__} does not support command {command!r}"
    if meta.commands is not None and command not in meta.commands:
        return f"command {command!r} is not in its commands {sorted(meta.commands)}"
    if command in meta.exclude_commands:
        return f"command {command!r} is in its exclude_commands"
    if meta.contexts is not None and context not in meta.contexts:
        return f"context {context!r} is not in its contexts {sorted(meta.contexts)}"
    if context in meta.exclude_contexts:
        return f"context {context!r} is in its exclude_contexts"
    return None


def build_plan(
    tasks: Sequence[Task],
    processors: Mapping[tuple[str, str], TaskProcessor],
    command: str,
    context: str,
) -> Plan:
    """Select the tasks in scope, resolve their dependencies and order them.

    Raises `DependencyError` for a dependency on a missing or out-of-scope task
    and `CycleError` naming the tasks of a cycle.
    """
    scoped: list[Task] = []
    excluded: list[tuple[Task, str]] = []
    excluded_by_name: dict[str, str] = {}
    for task in tasks:
        reason = out_of_scope_reason(task, processors[task.kind, task.version], command, context)
        if reason is None:
            scoped.append(task)
        else:
            excluded.append((task, reason))
            if task.meta.name:
                excluded_by_name[task.meta.name] = reason

    by_name: dict[str, int] = {}
    by_label: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for i, task in enumerate(scoped):
        if task.meta.name:
            by_name[task.meta.name] = i
        for pair in task.meta.labels.items():
            by_label[pair].append(i)

    deps: list[list[int]] = []
    warnings: list[str] = []
    every_label: set[tuple[str, str]] | None = None  # made only if a selector matches nothing
    for i, task in enumerate(scoped):
        found: list[int] = []
        for name in task.meta.dependency_names:
            j = by_name.get(name)
            if j is None:
                raise _missing_dependency(task, name, excluded_by_name, command, context, by_name)
            found.append(j)
        for selector in task.meta.dependency_selectors:
            candidates = min((by_label.get(pair, []) for pair in selector.labels), key=len)
            wanted = selector.labels
            if not candidates:
                if every_label is None:
                    every_label = {pair for t in tasks for pair in t.meta.labels.items()}
                unknown = [f"{k}={v}" for k, v in wanted if (k, v) not in every_label]
                if unknown:
                    warnings.append(
                        f"task {task.task_id!r} depends on every task labelled {selector}, but "
                        f"no task has the label {unknown[0]}: it orders nothing (misspelt?)"
                    )
            if len(wanted) == 1:  # every candidate already carries the one label
                found.extend(j for j in candidates if j != i)
                continue
            for j in candidates:
                if j != i and all(scoped[j].meta.labels.get(k) == v for k, v in wanted):
                    found.append(j)
        deps.append(list(dict.fromkeys(found)) if len(found) > 1 else found)

    order = _topological_order(scoped, deps)
    position = [0] * len(scoped)
    for new, old in enumerate(order):
        position[old] = new
    ordered_deps = [[position[j] for j in deps[old]] for old in order]
    dependents: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(ordered_deps):
        for j in ds:
            dependents[j].append(i)
    return Plan(
        command=command,
        context=context,
        tasks=[scoped[old] for old in order],
        deps=ordered_deps,
        dependents=dependents,
        excluded=excluded,
        warnings=warnings,
    )


def _missing_dependency(
    task: Task,
    name: str,
    excluded: Mapping[str, str],
    command: str,
    context: str,
    known: Iterable[str] = (),
) -> DependencyError:
    if name in excluded:
        return DependencyError(
            f"task {task.task_id!r} depends on {name!r}, which is not in scope for "
            f"command {command!r} in context {context!r} ({excluded[name]}); "
            f"widen the scope of {name!r} or narrow the scope of {task.task_id!r}"
        )
    return DependencyError(
        f"task {task.task_id!r} depends on {name!r}, but no task is named {name!r}"
        f"{did_you_mean(name, known)}"
    )


def _topological_order(tasks: Sequence[Task], deps: Sequence[list[int]]) -> list[int]:
    """Kahn's algorithm, keeping the order tasks were added among ready tasks."""
    remaining = [len(ds) for ds in deps]
    dependents: list[list[int]] = [[] for _ in tasks]
    for i, ds in enumerate(deps):
        for j in ds:
            dependents[j].append(i)
    ready = deque(i for i, n in enumerate(remaining) if n == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for k in dependents[i]:
            remaining[k] -= 1
            if remaining[k] == 0:
                ready.append(k)
    if len(order) < len(tasks):
        raise CycleError([tasks[i].task_id for i in _find_cycle(deps, remaining)])
    return order


def _find_cycle(deps: Sequence[list[int]], remaining: list[int]) -> list[int]:
    """A cycle among the tasks Kahn's algorithm could not order.

    Each of them still waits on a dependency that is itself unordered, so walking
    from one to such a dependency must come back to a task already seen.
    """
    node = next(i for i, n in enumerate(remaining) if n > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(j for j in deps[node] if remaining[j] > 0)
    return path[seen[node] :]


def close_over_dependencies(tasks: Sequence[Task], roots: Sequence[Task]) -> set[int]:
    """The ids (`id(task)`) of `roots` and of every task of `tasks` they depend on, at any depth.

    Dependencies are followed by name and by labels, whatever the scope: planning
    decides afterwards what is in scope.
    """
    by_name = {t.meta.name: t for t in tasks if t.meta.name}
    by_label: defaultdict[tuple[str, str], list[Task]] = defaultdict(list)
    for task in tasks:
        for pair in task.meta.labels.items():
            by_label[pair].append(task)
    keep: set[int] = set()
    pending = list(roots)
    while pending:
        task = pending.pop()
        if id(task) in keep:
            continue
        keep.add(id(task))
        pending.extend(by_name[n] for n in task.meta.dependency_names if n in by_name)
        for selector in task.meta.dependency_selectors:
            wanted = selector.labels
            candidates = min((by_label.get(pair, []) for pair in wanted), key=len)
            pending.extend(
                t for t in candidates if all(t.meta.labels.get(k) == v for k, v in wanted)
            )
    return keep
