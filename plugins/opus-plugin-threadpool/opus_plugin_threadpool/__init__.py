"""The `threadpool` runner: tasks run on one shared `concurrent.futures.ThreadPoolExecutor`.

Python cannot kill a running thread. `stop()` cancels a run that has not
started; for one that has, `stop()` and timeouts end the *run* at once (as
`cancelled` or `timed_out`) and release the caller, while the thread itself
finishes its work in the background.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core import TaskCancelledError, hookimpl
from opus_core.runners.base import BaseTaskRun, Runner, run_name

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__version__ = "0.1.0"


def default_max_workers() -> int:
    """Four threads per CPU, between 8 and 32: tasks are expected to wait on I/O."""
    return max(8, min(32, 4 * (os.cpu_count() or 1)))


class ThreadTaskRun(BaseTaskRun):
    """A run on the pool, wrapping its `concurrent.futures.Future`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.future: Future[Any] | None = None
        self.abandoned = False
        """Stopped or timed out while its thread runs: nobody waits for that thread."""

    def _from_future(self, future: Future[Any]) -> None:
        from concurrent.futures import CancelledError  # here: opus --help imports this module

        try:
            value = future.result()  # done already: this only reads the outcome
        except CancelledError:
            self._finish(exception=TaskCancelledError(f"task run {self.instance_name} was stopped"))
        except BaseException as exc:
            self._finish(exception=exc)
        else:
            self._finish(value=value)

    def _halt(self) -> None:
        if self.future is not None and not self.future.cancel():
            self.abandoned = True  # it runs on: a thread cannot be stopped


class ThreadPoolRunner(Runner):
    """Runs tasks on a shared thread pool (`"threadpool"`).

    Options: `max_workers` (default: 4 per CPU, between 8 and 32) and
    `thread_name_prefix`. The pool starts on the first `submit` and is shut
    down by `shutdown()` (the engine calls it at the end of a run it made the
    runner for) or at interpreter exit.
    """

    name: ClassVar[str] = "threadpool"

    def __init__(
        self, max_workers: int | None = None, thread_name_prefix: str = "opus-threadpool"
    ) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ValueError(
                f"max_workers must be a whole number of at least 1, got {max_workers!r}"
            )
        self.max_workers = max_workers or default_max_workers()
        self.thread_name_prefix = thread_name_prefix
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._runs: set[ThreadTaskRun] = set()  # submitted and not yet ended

    @property
    def max_concurrency(self) -> int | None:
        """As many tasks of a graph as there are threads."""
        return self.max_workers

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._executor is None:
                    from concurrent.futures import ThreadPoolExecutor  # not needed to list plugins

                    self._executor = ThreadPoolExecutor(self.max_workers, self.thread_name_prefix)
                executor = self._executor
        return executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Queue `fn(*args, **kwargs)` on the pool."""
        run = ThreadTaskRun(run_name(fn))
        with self._lock:
            self._runs.add(run)
        future = run.future = self._pool().submit(fn, *args, **kwargs)
        future.add_done_callback(lambda done: self._ended(run, done))
        return run

    def _ended(self, run: ThreadTaskRun, future: Future[Any]) -> None:
        with self._lock:
            self._runs.discard(run)
        run._from_future(future)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what has not started and let the threads go.

        With `wait`, first wait for the work still running — but not for work that
        was stopped or timed out: its thread cannot be killed and is left to finish
        (or not) on its own.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        with self._lock:
            abandoned = any(run.abandoned for run in self._runs)
            running = [r.future for r in self._runs if r.future and not r.abandoned]
        if wait and not abandoned:
            executor.shutdown(wait=True, cancel_futures=True)  # the threads end with their work
            return
        if wait:
            from concurrent.futures import wait as wait_for

            wait_for(running)
        executor.shutdown(wait=False, cancel_futures=True)


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `threadpool` runner."""
    return [ThreadPoolRunner]
