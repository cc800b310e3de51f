"""The runner interface: a `Runner` starts callables, a `BaseTaskRun` is the handle to one."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, ClassVar

from opus_core.errors import (
    TaskCancelledError,
    TaskTimeoutError,
    UpstreamFailedError,
    describe_exception,
)
from opus_core.results import TaskStatus
from opus_core.runners.work import NO_ENTRIES, Work, run_name

__all__ = [  # `Work` and its helpers live in opus_core.runners.work: importable from here too
    "HALT_GRACE",
    "NO_ENTRIES",
    "SIGNAL_CHECK",
    "Attempted",
    "BaseTaskRun",
    "Runner",
    "Work",
    "check_count",
    "run_name",
    "upstream_failure",
    "wait_for_halts",
]

SIGNAL_CHECK = 0.2
"""Seconds: the longest a wait for runs goes without letting Python handle signals (Ctrl-C)."""


class Attempted:
    """A value wrapped with the number of attempts it took (see `opus_core.function_task`)."""

    __slots__ = ("attempts", "value")

    def __init__(self, value: Any, attempts: int) -> None:
        self.value = value
        self.attempts = attempts

    def __reduce__(self) -> tuple[object, ...]:
        return (Attempted, (self.value, self.attempts))


def check_count(option: str, value: int | None) -> int | None:
    """A runner's count option (`max_workers`, `n_workers`): `value` if it is None or a
    whole number of at least 1, else `ValueError` naming `option`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{option} must be a whole number of at least 1, got {value!r}")
    return value


HALT_GRACE = 10.0
"""Seconds opus waits, at the end of a run and at exit, for `BaseTaskRun.halt()` calls still
under way (a stop or a timeout); past it, it says which runs were still halting and goes on."""

_halting: set[BaseTaskRun] = set()  # runs whose halt() is under way
_halted = threading.Condition()


def wait_for_halts(timeout: float | None = HALT_GRACE) -> list[BaseTaskRun]:
    """Wait until every `halt()` under way (of a run stopped or timed out, on any runner) has
    returned, or `timeout` seconds pass; the runs still halting then (none, normally).

    The engine calls it before it shuts a runner down and `opus` before it exits, so work a
    runner was told to halt is gone before opus says the run is over.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _halted:
        while _halting:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            _halted.wait(SIGNAL_CHECK if left is None else min(left, SIGNAL_CHECK))
        return list(_halting)


def _halts_at_exit() -> None:
    """At the program's exit: let halts under way end (within `HALT_GRACE`), else say so."""
    still = wait_for_halts(HALT_GRACE)
    if still:
        import sys

        names = ", ".join(sorted(run.instance_name for run in still))
        print(
            f"opus: exiting while still halting {names} (not done after {HALT_GRACE:g}s)",
            file=sys.stderr,
        )


_exit_hook = False


_cascade = threading.local()


def _call_back(run: BaseTaskRun, callbacks: list[Callable[[BaseTaskRun], None]]) -> None:
    """Call each of `callbacks` with `run`, one after another, and go on after one raises.

    A callback that ends another run (a dependent that cannot run because this one
    failed) does not call that run's callbacks from inside itself: they are queued
    and called by the outermost `_call_back` of this thread, so a chain of ten
    thousand dependents ends in a loop, not ten thousand nested calls.
    """
    pending = getattr(_cascade, "pending", None)
    if pending is not None:
        pending.append((run, callbacks))
        return
    pending = _cascade.pending = deque([(run, callbacks)])
    try:
        while pending:
            ended, calls = pending.popleft()
            for callback in calls:
                try:
                    callback(ended)
                except Exception:
                    import logging  # here: nothing else in a run needs it

                    logging.getLogger("opus").exception(
                        "a done callback of task run %s raised", ended.instance_name
                    )
    finally:
        _cascade.pending = None


class BaseTaskRun:
    """A handle to one started task.

    Runner authors subclass it, call `finish(value=...)` or `finish(exception=...)`
    exactly when the work ends, and override `halt()` to stop the work for real.
    The first call to `finish` wins, so a stop racing a result is harmless.

    The state the handle keeps for opus is private to this class (name-mangled), so a
    subclass may use any attribute names of its own.

    A run is awaitable: `await run` gives its result in async code without
    blocking the event loop.
    """

    __slots__ = (
        "__callbacks",
        "__dict__",  # subclasses and users may add attributes
        "__exception",
        "__latch",
        "__lock",
        "__status",
        "__value",
        "_instance_name",
        "attempts",
        "finished_at",
        "inputs",
        "name",
        "running_since",
        "started_at",
    )

    def __init__(self, name: str) -> None:
        self.inputs: tuple[BaseTaskRun, ...] = ()
        """The runs whose results this run was given (set by `@task` calls that pass runs).
        If one of them ended unsuccessfully, this run's failure is reported as
        `UpstreamFailedError` naming it."""
        self.name = name
        """The task's name."""
        self.attempts = 1
        """How many attempts the run took (known once it ended)."""
        self.started_at = time.monotonic()
        self.running_since: float | None = self.started_at
        """When the work began to run (`time.monotonic()`), or None while it waits in the
        runner's queue: a timeout counts from here (see `mark_queued`)."""
        self.finished_at: float | None = None
        self._instance_name: str | None = None
        self.__status: TaskStatus | None = None
        self.__value: Any = None
        self.__exception: BaseException | None = None
        self.__latch: Any = None  # a lock held until the run ends, made only when someone waits
        self.__lock = threading.Lock()
        self.__callbacks: list[Callable[[BaseTaskRun], None]] = []

    @property
    def instance_name(self) -> str:
        """The task's name plus a suffix unique to this run."""
        if self._instance_name is None:
            import uuid  # here: uuid is slow to import and few runs are asked their name

            self._instance_name = f"{self.name}-{uuid.uuid4().hex[:8]}"
        return self._instance_name

    def __wait_latch(self) -> Any:
        """A lock that is free once the run has ended (a `threading.Lock`, not an Event:
        making an Event costs forty times as much, and most runs are waited for once)."""
        with self.__lock:
            if self.__latch is None:
                self.__latch = threading.Lock()
                if self.__status is None:
                    self.__latch.acquire()  # released by finish
            return self.__latch

    # -- for runner authors ------------------------------------------------

    def finish(
        self,
        value: Any = None,
        exception: BaseException | None = None,
        status: TaskStatus | None = None,
    ) -> bool:
        """Record how the work ended — its `value`, or the `exception` it raised — and wake
        whoever waits; False (and nothing changes) if the run had already ended.

        Call it once the work has ended, from any thread. `status` is found from the
        exception when not given (`TaskTimeoutError`: timed out, `TaskCancelledError`:
        cancelled, `UpstreamFailedError`: skipped, anything else: failed).
        """
        with self.__lock:
            if self.__status is not None:
                return False
            if isinstance(value, Attempted):
                self.attempts, value = value.attempts, value.value
            if exception is not None:
                self.attempts = getattr(exception, "_opus_attempts", self.attempts)
                if self.inputs:
                    upstream = upstream_failure(self.name, self.inputs)
                    if upstream is not None:
                        exception = upstream
                if status is None:
                    status = (
                        TaskStatus.TIMED_OUT
                        if isinstance(exception, TaskTimeoutError)
                        else TaskStatus.CANCELLED
                        if isinstance(exception, TaskCancelledError)
                        else TaskStatus.SKIPPED
                        if isinstance(exception, UpstreamFailedError)
                        else TaskStatus.FAILED
                    )
            self.__value, self.__exception = value, exception
            self.__status = status or TaskStatus.SUCCEEDED
            self.finished_at = time.monotonic()
            callbacks, self.__callbacks = self.__callbacks, []
            if self.__latch is not None:
                self.__latch.release()
        if callbacks:
            _call_back(self, callbacks)
        return True

    def halt(self) -> None:
        """Stop the work itself (kill its process, cancel it on the cluster).

        Called once, after `stop()` or a timeout has ended the run as cancelled or timed
        out, in the thread that stopped it. Return once the work is gone (or cannot do
        harm): opus waits for `halt()` to return, up to `HALT_GRACE` seconds, before it
        shuts the runner down and before it exits. The base class cannot stop anything,
        so work of a runner that does not override it runs on unobserved.
        """

    def mark_queued(self) -> None:
        """The work waits in the runner's own queue (for a free worker): its timeout does
        not run until `mark_running()`. A run is taken as running from `submit` unless
        its runner says so."""
        self.running_since = None

    def mark_running(self) -> None:
        """The work queued by `mark_queued()` has begun to run: its timeout starts now."""
        self.running_since = time.monotonic()

    @classmethod
    def fetch_many(cls, runs: list[BaseTaskRun]) -> None:
        """Bring the values of `runs` (all ended, all of this class) to this process at once,
        before they are read one by one. A runner whose values stay remote until asked
        for (dask) fetches them in one round trip here; the base class has them already."""

    def before_wait(self) -> None:
        """Called before anyone blocks waiting for this run: a runner whose workers may
        wait for each other's work (threadpool) does the work here if it has not started,
        so a task that waits for another task cannot wait for a worker forever."""

    # -- the public handle -------------------------------------------------

    @property
    def status(self) -> TaskStatus | None:
        """How the run ended, or None while it runs."""
        return self.__status

    def outcome(self) -> tuple[TaskStatus | None, Any, BaseException | None]:
        """`(status, value, exception)` as this handle holds them now, without waiting or
        fetching (a runner that keeps values remote holds None until `get_result`)."""
        return self.__status, self.__value, self.__exception

    def done(self) -> bool:
        """True once the run has ended, whatever the outcome."""
        return self.__status is not None

    def is_running(self) -> bool:
        """True until the run has ended."""
        return self.__status is None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or `timeout` seconds pass; True if it ended."""
        if self.__status is not None:
            return True
        self.before_wait()
        latch = self.__wait_latch()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # In slices: the kernel may hand Ctrl-C's SIGINT to another thread (a worker's),
            # and Python raises KeyboardInterrupt here only once this thread runs again.
            left = SIGNAL_CHECK if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return self.__status is not None
            if latch.acquire(timeout=min(left, SIGNAL_CHECK)):
                latch.release()  # for the next waiter
                return True

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The task's return value.

        Raises the task's exception (or returns it, with `raise_exceptions=False`),
        and `TimeoutError` if the run does not end within `timeout` seconds.
        """
        if not self.wait(timeout):
            raise TimeoutError(f"task run {self.instance_name} did not finish within {timeout}s")
        if self.__exception is not None:
            if raise_exceptions:
                raise self.__exception
            return self.__exception
        return self.__value

    def exception(self) -> BaseException | None:
        """The exception the run ended with, or None (also None while running)."""
        return self.__exception

    def stop(self) -> None:
        """Stop the run: it ends as `cancelled` unless it had already ended, and its work
        is halted (`halt()`) before this returns."""
        self.__end(TaskCancelledError(f"task run {self.instance_name} was stopped"))

    def time_out(self, timeout: float) -> None:
        """End the run as `timed_out` now, its `timeout` seconds being up, and halt its work
        (the engine's deadline watcher calls it `timeout` seconds after `submit`)."""
        self.__end(TaskTimeoutError(f"task {self.name!r} timed out after {timeout:g}s"))

    def __end(self, error: BaseException) -> None:
        # The run is among the halting before anyone can see it ended, so whoever ends the
        # program on seeing it (the engine, `opus run`) waits for the halt.
        global _exit_hook
        with _halted:
            _halting.add(self)
            if not _exit_hook:
                import atexit

                atexit.register(_halts_at_exit)
                _exit_hook = True
        try:
            if self.finish(exception=error):
                self.halt()  # after the status is settled, so the halted work cannot claim another
        finally:
            with _halted:
                _halting.discard(self)
                _halted.notify_all()

    def add_done_callback(self, callback: Callable[[BaseTaskRun], None]) -> None:
        """Call `callback(run)` when the run ends (at once if it has)."""
        with self.__lock:
            if self.__status is None:
                self.__callbacks.append(callback)
                return
        callback(self)

    def remove_done_callback(self, callback: Callable[[BaseTaskRun], None]) -> None:
        """Forget a callback given to `add_done_callback` (no error if it already ran)."""
        with self.__lock:
            try:
                self.__callbacks.remove(callback)
            except ValueError:
                pass

    def __await__(self) -> Generator[Any, None, Any]:
        """`await run`: the result (or the task's exception), without blocking the loop."""
        if self.__status is None:
            import asyncio  # here: only async callers need it

            loop = asyncio.get_running_loop()
            woken = loop.create_future()

            def wake(_run: BaseTaskRun) -> None:
                try:
                    loop.call_soon_threadsafe(_settle, woken)
                except RuntimeError:  # the loop closed while the run went on
                    pass

            self.add_done_callback(wake)
            try:
                yield from woken.__await__()
            finally:
                self.remove_done_callback(wake)
        return self.get_result()

    def __repr__(self) -> str:
        state = self.__status.value if self.__status else "running"
        return f"<{type(self).__name__} {self.instance_name} {state}>"


def _settle(woken: Any) -> None:
    if not woken.done():
        woken.set_result(None)


_OUTCOMES = {
    TaskStatus.FAILED: "failed",
    TaskStatus.TIMED_OUT: "timed out",
    TaskStatus.CANCELLED: "was stopped",
    TaskStatus.SKIPPED: "did not run",
}


def upstream_failure(name: str, inputs: tuple[BaseTaskRun, ...]) -> UpstreamFailedError | None:
    """The error for a run named `name` whose input ended unsuccessfully, or None if none did.

    Down a chain of runs that did not run, the message and the chained cause stay
    those of the run that failed first, so they do not grow with the chain.
    """
    for run in inputs:
        status, _, cause = run.outcome()
        if status is None or status is TaskStatus.SUCCEEDED or status is TaskStatus.RESTORED:
            continue
        if isinstance(cause, UpstreamFailedError):
            origin, root = cause.origin, cause.__cause__
        else:
            outcome = _OUTCOMES.get(status, status.value)
            detail = describe_exception(cause) if cause is not None else status.value
            origin, root = f"{run.name!r} {outcome}: {detail}", cause
        error = UpstreamFailedError(name, run.name, origin)
        error.__cause__ = root
        return error
    return None


class Runner:
    """Where tasks run. Subclass it (or a built-in runner) to make your own.

    A runner has a class attribute `name` (what `opus.toml` and `runner=` call
    it), takes its options as keyword arguments (from `[runners.<name>]`), and
    implements `submit` (which receives a `Work`) and, if it holds resources,
    `shutdown`. See docs/runners.md for a worked example.

    Two class attributes tell the engine how to drive it:

    * `blocking`: `submit` returns only when the work is done (the engine then
      enforces timeouts inside the call, with an alarm signal).
    * `shares_memory`: the work sees the caller's objects rather than copies
      (otherwise what a processor saves to `state_persistence` is recorded and
      shipped back to the caller's persistence).
    """

    name: ClassVar[str] = ""
    blocking: ClassVar[bool] = False
    shares_memory: ClassVar[bool] = True

    @property
    def max_concurrency(self) -> int | None:
        """How many tasks of a graph the engine keeps in flight at once (None: no limit)."""
        return None

    def start(self) -> None:
        """Get ready to run tasks; the engine calls it before a run starts its first task.

        Acquire connections or clusters here (or lazily on first `submit`) and
        raise an `OpusError` saying what is wrong if the runner cannot work, so
        the run fails before anything starts.
        """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> BaseTaskRun:
        """Start `fn(*args, **kwargs)` and return its run handle without waiting.

        The engine and `@task` pass one `Work` as `fn` and nothing else; a user may
        call `submit(function, *args)` directly. `Work.of(fn, *args, **kwargs)` gives
        a `Work` either way. Return a `BaseTaskRun` (a subclass of your own) whose
        `finish` is called when the work ends and whose `halt` stops the work.
        """
        raise NotImplementedError(f"{type(self).__name__}.submit is not implemented")

    def input_handle(self, run: BaseTaskRun) -> Any:
        """What to pass to `submit` in place of `run`, a run this runner started, or None.

        A runner that can order work itself (dask, whose futures may be passed
        to other submissions) returns its own handle, so a task given `run` is
        submitted at once and the data never comes back through the caller.
        With None (the default), opus waits for `run` to end, without holding a
        worker, and passes its value.
        """
        return None

    def prepare(self, fn: Callable[..., Any], /) -> BaseTaskRun | None:
        """A run for `fn` made before its work can start, for `submit_prepared` to start.

        Function tasks whose inputs are still running are handed out as such a
        run, and started into it once the inputs end, which saves a second run
        object per task. None (the default): this runner cannot, and opus wraps
        the run `submit` returns later.
        """
        return None

    def submit_prepared(self, run: BaseTaskRun, work: Work, /) -> None:
        """Start `work` into `run`, made by `prepare` (not if it was stopped)."""
        raise NotImplementedError(f"{type(self).__name__} cannot start prepared runs")

    def submit_map(
        self, fn: Callable[..., Any], iterables: list[list[Any]], kwargs: dict[str, Any]
    ) -> list[BaseTaskRun]:
        """Start `fn(*row, **kwargs)` for each row of `zip(*iterables)` (lists of one
        length); one run per row.

        The default submits a `Work` per row; a runner with a cheaper way to start
        many (dask's `client.map`) overrides it.
        """
        name = run_name(fn)
        return [self.submit(Work(fn, row, kwargs, name)) for row in zip(*iterables, strict=True)]

    def flush(self) -> None:
        """Start whatever `submit` held back. The engine calls it after each burst of
        submissions; a runner that batches work (dask) submits the batch here."""

    def shutdown(self, wait: bool = True) -> None:
        """Release the runner's resources; with `wait`, after the work it started ends.

        The base class waits (up to `HALT_GRACE` seconds) for the `halt()` calls under
        way: a runner that overrides `shutdown` calls `super().shutdown(wait)` first.
        """
        wait_for_halts(HALT_GRACE)

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=exc is None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
