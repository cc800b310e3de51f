"""Runs passed as arguments: finding them in a call's arguments and putting values in their place.

A run may be an argument itself, or sit inside lists, tuples, sets and dicts at any
depth. `scan` finds them; once they ended, `resolve_inputs` rebuilds the arguments with
each run replaced by its value (or by the runner's own handle for it, which the runner
turns into the value where the work runs). Used by `opus_core.functions.decorator`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opus_core.functions.mapping import RunList
from opus_core.runners import BaseTaskRun, Runner

_MAX_DEPTH = 200
"""How deeply nested in containers a run may be passed (any depth is found; deeper ones
are refused with a clear error rather than risk Python's recursion limit)."""

_CONTAINERS = (list, tuple, set, frozenset, dict)


class Found:
    """The runs among a call's arguments, as `scan` finds them.

    `by_value` holds the runs that must be passed as values even to a runner
    with handles (dict keys, members of frozensets, runs inside subclasses of
    the containers, a namedtuple or `RunList` excepted: a runner would not find
    its handle there; and every run when containers holding them are shared or
    hold themselves, which a runner's own walk may not survive); `holders` the
    ids of the containers that hold a run, directly or not — the only ones rebuilt.
    """

    __slots__ = ("by_value", "holders", "runs")

    def __init__(
        self,
        runs: list[BaseTaskRun],
        by_value: set[BaseTaskRun] | frozenset[BaseTaskRun] = frozenset(),
        holders: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        self.runs = runs
        self.by_value = by_value
        self.holders = holders


def scan(values: Iterable[Any]) -> Found:
    """Find the runs in `values`: each value itself, or inside lists, tuples, sets and
    dicts at any depth (shared and self-containing containers are walked once)."""
    found: dict[int, BaseTaskRun] = {}
    by_value: set[BaseTaskRun] = set()
    holders: set[int] = set()
    parents: dict[int, list[int]] = {}
    stack: list[tuple[Any, int, bool]] = [(value, 0, False) for value in values]
    tangled = False  # a container met twice (shared, or holding itself)
    while stack:
        item, parent, plain = stack.pop()
        if isinstance(item, BaseTaskRun):
            found.setdefault(id(item), item)
            if plain:
                by_value.add(item)
            if parent:
                _hold(parent, holders, parents)
        elif isinstance(item, _CONTAINERS):
            key = id(item)
            if key in parents:  # met before: only its new parent matters
                tangled = True
                if parent:
                    parents[key].append(parent)
                    if key in holders:  # what holds runs now has one more container above
                        _hold(parent, holders, parents)
                continue
            parents[key] = [parent] if parent else []
            inner = plain or not _handles_pass(item)
            if isinstance(item, dict):
                stack.extend((k, key, True) for k in item)
                stack.extend((v, key, inner) for v in item.values())
            else:
                stack.extend((x, key, inner) for x in item)
    runs = list(found.values())
    if tangled and holders:  # a runner walking its handles could loop or go exponential
        by_value.update(runs)
    return Found(runs, by_value, holders)


def _hold(container: int, holders: set[int], parents: dict[int, list[int]]) -> None:
    """Mark `container` and every container above it as holding a run."""
    climb = [container]
    while climb:
        holder = climb.pop()
        if holder not in holders:
            holders.add(holder)
            climb.extend(parents.get(holder, ()))


def _handles_pass(container: object) -> bool:
    """Whether a runner's handle inside `container` reaches the work as the value."""
    kind = type(container)
    return kind in (list, tuple, set, dict, RunList) or (
        kind.__base__ is tuple and hasattr(kind, "_make")
    )


NO_RUNS = Found([])
"""What `scan` finds in a call without arguments: no run."""


def call_runs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Found:
    """`scan` of a call's arguments, quicker when no argument is a container."""
    runs: list[BaseTaskRun] = []
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, BaseTaskRun):
            runs.append(value)
        elif isinstance(value, _CONTAINERS):
            return scan((*args, *kwargs.values()))
    return Found(list(dict.fromkeys(runs)) if len(runs) > 1 else runs)


def replace_runs(
    value: Any,
    swap: Callable[[BaseTaskRun], Any],
    found: Found,
    made: dict[int, Any],
    depth: int = 0,
) -> Any:
    """`value` with each run in it replaced by `swap(run)`.

    Only containers that hold runs are rebuilt, each once (`made`), so shared
    containers stay shared and a list or dict that holds itself still does.
    """
    if isinstance(value, BaseTaskRun):
        return _value(value) if value in found.by_value else swap(value)
    key = id(value)
    if key not in found.holders:
        return value
    if key in made:
        return made[key]
    if depth > _MAX_DEPTH:
        raise TypeError(
            f"runs are nested more than {_MAX_DEPTH} containers deep in a task's arguments; "
            "pass them nearer the top"
        )
    if not _handles_pass(value):
        swap = _value

    def inner(item: Any, by: Callable[[BaseTaskRun], Any] = swap) -> Any:
        return replace_runs(item, by, found, made, depth + 1)

    if isinstance(value, (list, dict, set)):  # mutable: made first, so cycles close
        kind = type(value)
        if kind in (list, RunList):
            new: Any = []
        elif kind in (dict, set):
            new = kind()
        else:
            import copy  # here: only container subclasses need it

            new = copy.copy(value)  # keeps the subclass and its attributes (a default_factory)
            new.clear()
        made[key] = new
        if isinstance(value, dict):
            for k, v in list(value.items()):
                new[inner(k, _value)] = inner(v)
        elif isinstance(value, list):
            new.extend([inner(x) for x in value])
        else:
            new.update([inner(x) for x in value])
        return new
    made[key] = value  # an immutable on a cycle back to itself is met as it was
    items = [inner(x) for x in value]
    if isinstance(value, tuple) and hasattr(value, "_make"):  # a namedtuple
        result = value._make(items)
    else:
        try:
            result = type(value)(items)
        except Exception as exc:
            raise TypeError(
                f"cannot pass runs inside a {type(value).__name__}: rebuilding it failed ({exc}); "
                "use a list, tuple, set or dict"
            ) from None
    made[key] = result
    return result


def resolve_inputs(
    runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any], found: Found
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments with each run replaced by its value or its runner's handle."""
    if not found.holders:  # runs only as arguments themselves: nothing to rebuild
        return tuple([stand_in(runner, a) if isinstance(a, BaseTaskRun) else a for a in args]), {
            k: stand_in(runner, v) if isinstance(v, BaseTaskRun) else v for k, v in kwargs.items()
        } if kwargs else kwargs
    swap = functools.partial(stand_in, runner)
    made: dict[int, Any] = {}
    by_value = found.by_value
    resolved = tuple(
        [
            stand_in(runner, a)
            if isinstance(a, BaseTaskRun) and a not in by_value
            else replace_runs(a, swap, found, made)
            for a in args
        ]
    )
    if kwargs:
        kwargs = {k: replace_runs(v, swap, found, made) for k, v in kwargs.items()}
    return resolved, kwargs


def _value(run: BaseTaskRun) -> Any:
    return run.get_result(0)


def stand_in(runner: Runner, run: BaseTaskRun) -> Any:
    """What replaces an input run: the runner's own handle for it, else its value."""
    handle = runner.input_handle(run)
    return run.get_result(0) if handle is None else handle


def resolve_values(
    args: tuple[Any, ...], kwargs: dict[str, Any], found: Found
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments with each run (every one ended) replaced by its value."""
    made: dict[int, Any] = {}
    values = tuple([replace_runs(a, _value, found, made) for a in args])
    return values, {k: replace_runs(v, _value, found, made) for k, v in kwargs.items()}


def when_all_done(runs: Sequence[BaseTaskRun], then: Callable[[], None]) -> None:
    """Call `then()` once every one of `runs` has ended: now, if they have; else from the
    done callback of the last to end."""
    pending = [run for run in dict.fromkeys(runs) if run.status is None]
    if not pending:
        then()
        return
    left = [len(pending)]
    lock = threading.Lock()

    def one_ended(_: BaseTaskRun) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for run in pending:
        run.add_done_callback(one_ended)
