"""The `threadpool` runner: tasks run on one shared `concurrent.futures.ThreadPoolExecutor`.

Python cannot kill a running thread. `stop()` cancels a run that has not
started; for one that has, `stop()` and timeouts end the *run* at once (as
`cancelled` or `timed_out`) and release the caller, while the thread itself
finishes its work in the background.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core import TaskCancelledError, hookimpl
from opus_core.runners.base import BaseTaskRun, Runner, Work, check_count, run_name

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__version__ = "0.1.0"

_pool_thread = threading.local()
"""`runner`: the `ThreadPoolRunner` whose pool this thread belongs to; `next`: while the
thread hands a task's outcome to the run's callbacks, `_OPEN`, or the run of a dependent
they made ready, which the thread does next (else `_CLOSED`)."""

_OPEN = object()
"""The thread hands out an outcome: the first dependent made ready is its next work."""
_CLOSED = object()
"""Dependents made ready go to the pool's queue."""


def default_max_workers() -> int:
    """Four threads per CPU, between 8 and 32: tasks are expected to wait on I/O."""
    return max(8, min(32, 4 * (os.cpu_count() or 1)))


class ThreadTaskRun(BaseTaskRun):
    """A run on the pool, wrapping its `concurrent.futures.Future`."""

    __slots__ = ("abandoned", "future", "job", "runner")

    def __init__(self, name: str, runner: ThreadPoolRunner) -> None:
        super().__init__(name)
        self.runner = runner
        self.future: Future[Any] | None = None
        self.abandoned = False
        """Stopped or timed out while its thread runs: nobody waits for that thread."""
        self.job: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None
        """The work, until a thread takes it."""

    def before_wait(self) -> None:
        """On a pool thread of this run's pool, do the work now if it is still queued."""
        # A pool thread waiting for work still queued on its own pool does that work
        # itself: otherwise tasks that wait for tasks can fill every thread and wait forever.
        local = _pool_thread
        pool = getattr(local, "runner", None)
        if pool is None:
            return  # not a pool thread
        follow = local.next
        if isinstance(follow, ThreadTaskRun):  # it would be done after this wait: not now
            local.next = _OPEN
            if follow is self:
                pool._execute(self, *self._take())
                return
            pool._queue(follow, *follow._take())  # another thread does it
        future = self.future
        if pool is self.runner and future is not None and future.cancel():
            pool._execute(self, *self._take())

    def _take(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        job, self.job = self.job, None
        if job is None:
            raise RuntimeError(f"task run {self.instance_name} was started twice")
        return job

    def halt(self) -> None:
        """Cancel the work if it has not started; a running thread cannot be stopped."""
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
        self.max_workers = check_count("max_workers", max_workers) or default_max_workers()
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

                    self._executor = ThreadPoolExecutor(
                        self.max_workers, self.thread_name_prefix, initializer=self._mark_thread
                    )
                executor = self._executor
        return executor

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Queue `fn(*args, **kwargs)` on the pool."""
        run = ThreadTaskRun(run_name(fn), self)
        self._queue(run, fn, args, kwargs)
        return run

    def _queue(
        self, run: ThreadTaskRun, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> None:
        run.job = (fn, args, kwargs)
        self._runs.add(run)  # one bytecode-level set operation: safe without the lock
        run.future = self._pool().submit(self._run_job, run)

    def _mark_thread(self) -> None:
        _pool_thread.runner = self
        _pool_thread.next = _CLOSED

    def _run_job(self, run: ThreadTaskRun) -> None:
        if run.job is not None:  # not taken by a waiting pool thread meanwhile
            self._execute(run, *run._take())

    def prepare(self, fn: Callable[..., Any], /) -> BaseTaskRun | None:
        """A run for `fn` that `submit_prepared` queues later."""
        return ThreadTaskRun(run_name(fn), self)

    def submit_prepared(self, run: BaseTaskRun, work: Work, /) -> None:
        """Queue `work` on the pool, its outcome going to `run`.

        Called from the callbacks of a run that just ended on this pool (a dependent whose
        inputs are now ready), the first such work is done next by the same thread, once
        those callbacks return, without a trip through the queue: a chain of runs goes
        from link to link on one thread, as the work of one function would.
        """
        if not isinstance(run, ThreadTaskRun) or run.runner is not self:
            raise TypeError(f"not a run this runner prepared: {run!r}")
        local = _pool_thread
        if getattr(local, "next", _CLOSED) is _OPEN and local.runner is self:
            run.job = (work, (), {})
            self._runs.add(run)
            local.next = run
            return
        self._queue(run, work, (), {})

    def submit_map(
        self, fn: Callable[..., Any], iterables: list[list[Any]], kwargs: dict[str, Any]
    ) -> list[BaseTaskRun]:
        """Start one run per row, queued as one batch that up to `max_workers` threads drain.

        Each element is still its own run (stop, timeout, result), but the pool
        is handed one job per thread instead of one per element: the cost of a
        future and a thread wake-up per element is what a batch saves.
        """
        name = run_name(fn)
        runs = [ThreadTaskRun(name, self) for _ in range(len(iterables[0]) if iterables else 0)]
        if not runs:
            return []
        batch = deque(zip(runs, zip(*iterables, strict=True), strict=True))
        self._runs.update(runs)
        pool = self._pool()
        for _ in range(min(self.max_workers, len(runs))):
            pool.submit(self._drain, pool, batch, fn, kwargs)
        return runs

    def _drain(
        self,
        pool: ThreadPoolExecutor,
        batch: deque[tuple[ThreadTaskRun, tuple[Any, ...]]],
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> None:
        """On a pool thread: run the batch's elements one after another until none is left
        (or the pool is shut down: what has not started is then cancelled)."""
        while self._executor is pool:
            try:
                run, args = batch.popleft()
            except IndexError:
                return
            self._execute(run, fn, args, kwargs)

    def _execute(
        self, run: ThreadTaskRun, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> None:
        """On a pool thread: do the work and hand its outcome to the run; then the work of
        the dependent its callbacks made ready first, if any (see `submit_prepared`).

        The outcome goes straight to the run rather than through the future's
        callbacks: this is the whole cost of the runner over a bare executor.
        """
        local = _pool_thread
        while True:
            follow = None
            try:
                if run.status is None:  # not stopped while it queued
                    try:
                        value, error = fn(*args, **kwargs), None
                    except BaseException as exc:  # every outcome is the run's, none the pool's
                        value, error = None, exc
                    outer, local.next = local.next, _OPEN
                    try:
                        run.finish(value, error)
                    finally:
                        follow, local.next = local.next, outer
            finally:
                self._runs.discard(run)
            if not isinstance(follow, ThreadTaskRun):
                return
            run = follow
            fn, args, kwargs = run._take()

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what has not started and let the threads go.

        With `wait`, first wait for the work still running — but not for work that
        was stopped or timed out: its thread cannot be killed and is left to finish
        (or not) on its own.
        """
        super().shutdown(wait)
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        runs = self._runs.copy()  # atomic: pool threads discard runs as they end
        abandoned = any(run.abandoned for run in runs)
        running = [r.future for r in runs if r.future and not r.abandoned]
        if wait and not abandoned:
            executor.shutdown(wait=True, cancel_futures=True)  # the threads end with their work
        else:
            if wait:
                from concurrent.futures import wait as wait_for

                wait_for(running)
            executor.shutdown(wait=False, cancel_futures=True)
        for run in runs:  # queued work the shutdown cancelled never reaches `_execute`
            if (run.future is None and run.status is None) or (
                run.future is not None and run.future.cancelled()
            ):
                self._runs.discard(run)
                run.finish(
                    exception=TaskCancelledError(f"task run {run.instance_name} was stopped")
                )


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The `threadpool` runner."""
    return [ThreadPoolRunner]
