"""The `sequential` runner: the work runs in the caller, and `submit` returns when it ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from opus_core.runners.base import BaseTaskRun, Runner, run_name


class SequentialTaskRun(BaseTaskRun):
    """A run that already ended when `submit` returned it."""


class SequentialRunner(Runner):
    """Runs each task in the calling thread, one at a time (`"sequential"`).

    Exceptions are kept in the run for `get_result`, and so are the other
    BaseExceptions a task may raise (`asyncio.CancelledError`, `GeneratorExit`):
    they end that run, not the caller. KeyboardInterrupt and SystemExit go on up
    to the caller, as in a plain call (the engine's manifest tasks turn a
    processor's SystemExit into a failure of the task).

    The work runs in the caller's thread, so `stop()` cannot interrupt it: a
    stopped graph starts no further task, and the one running ends as it would
    have.
    """

    name: ClassVar[str] = "sequential"
    blocking: ClassVar[bool] = True
    run_class: ClassVar[type[SequentialTaskRun]] = SequentialTaskRun

    @property
    def max_concurrency(self) -> int | None:
        """One task at a time."""
        return 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Call `fn(*args, **kwargs)` now and return its finished run."""
        run = self.run_class(run_name(fn))
        try:
            value = fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            run.finish(exception=exc)
        else:
            run.finish(value=value)
        return run
