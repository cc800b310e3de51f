"""Planning a run: which tasks are in scope, what each depends on, and in what order.

Everything that can be known before a task runs is checked here, so a bad
graph fails before anything starts. Names and labels are looked up in indexes built
once per plan; the order is the order tasks were added in when every task comes after
what it depends on (O(tasks + dependencies)), else the nearest order that puts each
task after its dependencies (a heap: O((tasks + dependencies) log tasks)).
"""

from __future__ import annotations

import heapq
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from opus_core.errors import CycleError, DependencyError, did_you_mean
from opus_core.manifest import LabelSelector, Task
from opus_core.processor import TaskProcessor


class Adjacency(Sequence[tuple[int, ...]]):
    """For each task of a plan, the positions of the tasks it points to, in two flat arrays.

    `adjacency[i]` is a tuple of positions; `targets[offsets[i]:offsets[i + 1]]` is the
    same without making one. A million tasks cost two machine integers each and one per
    edge, not a list object apiece that the garbage collector would have to walk.
    """

    __slots__ = ("offsets", "targets")

    def __init__(self, offsets: array[int], targets: array[int]) -> None:
        self.offsets = offsets
        """`len(self) + 1` increasing positions into `targets`."""
        self.targets = targets

    @classmethod
    def empty(cls, n: int) -> Adjacency:
        """`n` tasks, none pointing anywhere."""
        return cls(array("q", bytes(8 * (n + 1))), array("q"))

    @classmethod
    def from_lists(cls, lists: Iterable[Iterable[int]]) -> Adjacency:
        """An adjacency holding `lists` (one iterable of positions per task)."""
        offsets = array("q", [0])
        targets = array("q")
        for items in lists:
            targets.extend(items)
            offsets.append(len(targets))
        return cls(offsets, targets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> tuple[int, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, ...] | list[tuple[int, ...]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("adjacency index out of range")
        return tuple(self.targets[self.offsets[index] : self.offsets[index + 1]])

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        offsets, targets = self.offsets, self.targets
        for i in range(len(offsets) - 1):
            yield tuple(targets[offsets[i] : offsets[i + 1]])

    def reversed_edges(self) -> Adjacency:
        """The same edges pointing the other way, each list in increasing position."""
        n = len(self)
        offsets, targets = self.offsets, self.targets
        counts = [0] * (n + 1)
        for j in targets:
            counts[j + 1] += 1
        running = 0
        for i in range(n + 1):
            running += counts[i]
            counts[i] = running
        reverse_offsets = array("q", counts)
        fill = counts[:n]
        reverse = array("q", bytes(8 * len(targets)))
        for i in range(n):
            for e in range(offsets[i], offsets[i + 1]):
                j = targets[e]
                reverse[fill[j]] = i
                fill[j] += 1
        return Adjacency(reverse_offsets, reverse)


@dataclass
class Plan:
    """Tasks in scope for one command and context, in a topological order: the order they
    were added in, each task moved after what it depends on where it was not.

    `deps[i]` and `dependents[i]` are positions in `tasks` (see `Adjacency`);
    every dependency of `tasks[i]` comes before it. `excluded` pairs each task
    out of scope with why.
    """

    command: str
    context: str
    tasks: list[Task]
    deps: Adjacency
    dependents: Adjacency
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


def _in_scope(task: Task, command: str, context: str) -> bool:
    """`out_of_scope_reason` is None, for a task whose processor supports `command`."""
    meta = task.meta
    return (
        (meta.commands is None or command in meta.commands)
        and command not in meta.exclude_commands
        and (meta.contexts is None or context in meta.contexts)
        and context not in meta.exclude_contexts
    )


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
    scoped, excluded = _select(tasks, processors, command, context)
    # Dependencies as edges (task, the task it depends on), grouped by task: a list per
    # task would be a million lists for a million tasks.
    n = len(scoped)
    offsets = array("q", [0])
    targets = array("q")
    edges = _Edges(tasks, scoped, excluded, command, context)
    forward = True  # every task comes after what it depends on: the order of addition holds
    for i, task in enumerate(scoped):
        meta = task.meta
        if meta.dependency_names or meta.dependency_selectors:
            found = edges.of(i, task)
            if len(found) > 1:
                found = list(dict.fromkeys(found))
            if found and max(found) >= i:
                forward = False
            targets.extend(found)
        offsets.append(len(targets))
    warnings = edges.warnings
    del edges  # its index of every name is not kept while the order is worked out
    deps = Adjacency(offsets, targets)
    if not targets:  # nothing depends on anything: the order is the order of addition
        return Plan(command, context, scoped, deps, Adjacency.empty(n), excluded, warnings)
    dependents = deps.reversed_edges()
    if forward:  # already a topological order, and without a cycle
        return Plan(command, context, scoped, deps, dependents, excluded, warnings)
    order = _topological_order(scoped, deps, dependents)
    ordered = _renumbered(deps, order)
    return Plan(
        command=command,
        context=context,
        tasks=[scoped[old] for old in order],
        deps=ordered,
        dependents=ordered.reversed_edges(),
        excluded=excluded,
        warnings=warnings,
    )


def _select(
    tasks: Sequence[Task],
    processors: Mapping[tuple[str, str], TaskProcessor],
    command: str,
    context: str,
) -> tuple[list[Task], list[tuple[Task, str]]]:
    """The tasks in scope for `command` in `context`, and the others with the reason."""
    scoped: list[Task] = []
    excluded: list[tuple[Task, str]] = []
    supports: dict[tuple[str, str], bool] = {}
    for task in tasks:
        key = (task.kind, task.version)
        supported = supports.get(key)
        if supported is None:
            supported = supports[key] = command in processors[key].commands
        if supported and _in_scope(task, command, context):
            scoped.append(task)
            continue
        reason = out_of_scope_reason(task, processors[key], command, context)
        assert reason is not None
        excluded.append((task, reason))
    return scoped, excluded


class _Edges:
    """Finds what each task in scope depends on, by name and by labels; the indexes of
    names and labels are made when first needed, and `warnings` collects label selectors
    that match no task at all."""

    def __init__(
        self,
        tasks: Sequence[Task],
        scoped: list[Task],
        excluded: list[tuple[Task, str]],
        command: str,
        context: str,
    ) -> None:
        self.tasks, self.scoped, self.excluded = tasks, scoped, excluded
        self.command, self.context = command, context
        self.by_name: dict[str, int] | None = None
        self.by_label: defaultdict[tuple[str, str], list[int]] | None = None
        self.every_label: set[tuple[str, str]] | None = None  # only if a selector finds none
        self.warnings: list[str] = []

    def of(self, i: int, task: Task) -> list[int]:
        """The positions in scope of what the task at position `i` depends on."""
        found: list[int] = []
        names = task.meta.dependency_names
        if names:
            by_name = self.by_name
            if by_name is None:
                by_name = self.by_name = {
                    t.meta.name: k for k, t in enumerate(self.scoped) if t.meta.name
                }
            for name in names:
                j = by_name.get(name)
                if j is None:
                    raise self._missing(task, name)
                found.append(j)
        for selector in task.meta.dependency_selectors:
            found.extend(self._labelled(i, task, selector))
        return found

    def _missing(self, task: Task, name: str) -> DependencyError:
        excluded = {t.meta.name: reason for t, reason in self.excluded if t.meta.name}
        known = self.by_name or {}
        return _missing_dependency(task, name, excluded, self.command, self.context, known)

    def _labelled(self, i: int, task: Task, selector: LabelSelector) -> list[int]:
        """The tasks in scope (other than `i`) carrying every label of `selector`."""
        by_label = self.by_label
        if by_label is None:
            by_label = self.by_label = defaultdict(list)
            for k, t in enumerate(self.scoped):
                for pair in t.meta.labels.items():
                    by_label[pair].append(k)
        wanted = selector.labels
        candidates = min((by_label.get(pair, []) for pair in wanted), key=len)
        if not candidates:
            self._warn_unknown(task, selector)
        if len(wanted) == 1:  # every candidate already carries the one label
            return [j for j in candidates if j != i]
        scoped = self.scoped
        return [
            j
            for j in candidates
            if j != i and all(scoped[j].meta.labels.get(k) == v for k, v in wanted)
        ]

    def _warn_unknown(self, task: Task, selector: LabelSelector) -> None:
        if self.every_label is None:
            self.every_label = {pair for t in self.tasks for pair in t.meta.labels.items()}
        unknown = [f"{k}={v}" for k, v in selector.labels if (k, v) not in self.every_label]
        if unknown:
            self.warnings.append(
                f"task {task.task_id!r} depends on every task labelled {selector}, but "
                f"no task has the label {unknown[0]}: it orders nothing (misspelt?)"
            )


def _renumbered(deps: Adjacency, order: list[int]) -> Adjacency:
    """`deps` with the tasks renumbered in `order` (the task at `order[k]` becomes `k`)."""
    offsets, targets = deps.offsets, deps.targets
    position = array("q", bytes(8 * len(order)))
    for new, old in enumerate(order):
        position[old] = new
    new_offsets = array("q", [0])
    new_targets = array("q")
    for old in order:
        new_targets.extend(position[j] for j in targets[offsets[old] : offsets[old + 1]])
        new_offsets.append(len(new_targets))
    return Adjacency(new_offsets, new_targets)


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


def _topological_order(tasks: Sequence[Task], deps: Adjacency, dependents: Adjacency) -> list[int]:
    """The order tasks were added in, each task moved down only as far as what it depends on
    needs: Kahn's algorithm taking the earliest-added ready task first (the smallest
    topological order), so a file listing each task after its dependencies keeps its order."""
    offsets = deps.offsets
    remaining = [offsets[i + 1] - offsets[i] for i in range(len(tasks))]
    after, targets = dependents.offsets, dependents.targets
    ready = [i for i, n in enumerate(remaining) if n == 0]  # increasing: already a heap
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for e in range(after[i], after[i + 1]):
            k = targets[e]
            remaining[k] -= 1
            if remaining[k] == 0:
                heapq.heappush(ready, k)
    if len(order) < len(tasks):
        raise CycleError([tasks[i].task_id for i in _find_cycle(deps, remaining)])
    return order


def _find_cycle(deps: Adjacency, remaining: list[int]) -> list[int]:
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
