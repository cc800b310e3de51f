"""An example plugin: the `nice` runner, a process runner whose tasks run at lower CPU priority.

It shows the whole of a runner plugin: subclass a built-in runner, take
options as keyword arguments, and register the class with a hookimpl.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from opus_core import hookimpl
from opus_core.runners import BaseTaskRun, ProcessRunner, Runner, Work


class Niced:
    """Calls `fn` after lowering the priority of the process it runs in."""

    def __init__(self, fn: Callable[..., Any], niceness: int) -> None:
        self.fn = fn
        self.niceness = niceness

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        os.nice(self.niceness)
        return self.fn(*args, **kwargs)


class NiceRunner(ProcessRunner):
    """Runs each task in its own process, `niceness` steps lower in CPU priority."""

    name = "nice"

    def __init__(self, niceness: int = 10, max_workers: int | None = None) -> None:
        super().__init__(max_workers=max_workers)
        if not 0 <= niceness <= 19:
            raise ValueError(f"niceness must be between 0 and 19, got {niceness}")
        self.niceness = niceness

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Run the work as the process runner does, at lower priority (same name and fields)."""
        work = Work.of(fn, *args, **kwargs)
        return super().submit(dataclasses.replace(work, fn=Niced(work.fn, self.niceness)))


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `nice` runner."""
    return [NiceRunner]
