"""`TaskFunction.map`: one run per element, the runs it returns (`RunList`), and `unmapped`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

from opus_core.runners import BaseTaskRun


class unmapped:
    """A value `TaskFunction.map` passes whole to every run instead of mapping over it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


class RunList(list[BaseTaskRun]):
    """The runs `TaskFunction.map` started, in the order of the elements."""

    def done(self) -> bool:
        """True once every run has ended."""
        return all(run.done() for run in self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every run ended or `timeout` seconds passed; True if all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for run in self:
            if run.status is None and not run.wait(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            ):
                return False
        return True

    def get_results(self, timeout: float | None = None, raise_exceptions: bool = True) -> list[Any]:
        """Every run's value, in order.

        Raises the first failure in order (or, with `raise_exceptions=False`, puts
        each exception in its place) and `TimeoutError` if the runs do not all
        end within `timeout` seconds.
        """
        if not self.wait(timeout):
            left = sum(1 for run in self if not run.done())
            raise TimeoutError(f"{left} of {len(self)} runs did not finish within {timeout}s")
        kinds: dict[type[BaseTaskRun], list[BaseTaskRun]] = {}
        for run in self:
            kinds.setdefault(type(run), []).append(run)
        for kind, runs in kinds.items():
            kind.fetch_many(runs)  # remote values come in one round trip, not one each
        return [run.get_result(0, raise_exceptions) for run in self]


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


def mapped_rows(
    name: str, iterables: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The rows `TaskFunction.map` starts a run for, and the keyword arguments of every run.

    Checks what task `name` was given to map over; `unmapped(x)` repeats `x` in every
    row (and is unwrapped among `kwargs`); the shortest iterable ends the rows, as `zip`.
    """
    if not iterables:
        raise TypeError(f"{name}.map() needs at least one iterable to map over")
    sources: list[Iterable[Any]] = []
    for position, iterable in enumerate(iterables, 1):
        if isinstance(iterable, unmapped):
            sources.append(itertools.repeat(iterable.value))
        elif isinstance(iterable, (str, bytes, BaseTaskRun)) or not _iterable(iterable):
            what = "a task run" if isinstance(iterable, BaseTaskRun) else type(iterable).__name__
            raise TypeError(
                f"{name}.map() argument {position} is {what}, not something to map "
                "over; pass a list (or a RunList), or wrap it in unmapped(...) to give it "
                "whole to every run"
            )
        else:
            sources.append(iterable)
    if all(isinstance(i, unmapped) for i in iterables):
        raise TypeError(f"{name}.map() needs at least one argument not in unmapped()")
    rows = list(zip(*sources))  # noqa: B905 - zip semantics: the shortest ends the map
    kwargs = {k: v.value if isinstance(v, unmapped) else v for k, v in kwargs.items()}
    return rows, kwargs
