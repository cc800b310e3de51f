"""Enforcing timeouts: an alarm for work running in the caller, a watcher for the rest.

What a timeout may be is checked by `opus_core.task_numbers.check_task_number`."""

from __future__ import annotations

import heapq
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opus_core.errors import TaskTimeoutError
from opus_core.task_numbers import MAX_SECONDS

if TYPE_CHECKING:
    from opus_core.runners.base import BaseTaskRun


def enforceable(timeout: float) -> bool:
    """Whether a clock can hold `timeout` (a checked one always can)."""
    try:
        return 0 < timeout <= MAX_SECONDS
    except TypeError:
        return False


class _Alarm(BaseException):
    """Raised into the work by SIGALRM; a BaseException so `except Exception` cannot swallow it."""


def call_with_alarm(
    fn: Callable[[], Any], timeout: float | None, name: str, grace: float = 0.0
) -> Any:
    """Call `fn()`, raising `TaskTimeoutError` if it runs longer than `timeout` seconds.

    With `grace`, the alarm comes that much later (the work was asked to stop
    itself at `timeout`, as a cancelled coroutine is); the error still names
    `timeout`.

    In the main thread the call is interrupted by SIGALRM. Elsewhere a signal
    cannot reach it, so the call runs to its end and then counts as timed out.
    """
    if timeout is None or not enforceable(timeout):
        return fn()  # no timeout, or one no clock can hold (check_task_number refuses it)
    message = f"task {name!r} timed out after {timeout:g}s"
    if threading.current_thread() is not threading.main_thread():
        start = time.monotonic()
        value = fn()
        if time.monotonic() - start > timeout:
            raise TaskTimeoutError(message)
        return value

    # A timer the caller set (pytest-timeout's, a program's own) is kept: if it comes due
    # first its handler runs, as it would have, and the call's own alarm is set again.
    now = time.monotonic()
    due = now + timeout + grace
    caller_left, caller_interval = signal.getitimer(signal.ITIMER_REAL)
    caller_due = now + caller_left if caller_left else None
    heard = []  # the caller's alarm, when it came during the call

    def on_alarm(signum: int, frame: Any) -> None:
        now = time.monotonic()
        if now < due and caller_due is not None and now >= caller_due:  # the caller's alarm
            heard.append(now)
            signal.setitimer(signal.ITIMER_REAL, due - now)
            if callable(previous):
                previous(signum, frame)
            return
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    first = min(due, caller_due) if caller_due is not None else due
    signal.setitimer(signal.ITIMER_REAL, max(first - time.monotonic(), 1e-6))
    try:
        return fn()
    except _Alarm:
        raise TaskTimeoutError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if caller_due is not None and (not heard or caller_interval):  # the caller's, again
            left = caller_interval if heard else caller_due - time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), caller_interval)


QUEUED_CHECK = 0.1
"""Seconds between looks at a run whose timeout fell due while its work was queued."""


class DeadlineWatcher:
    """One daemon thread that times out runs whose deadline has passed.

    One bad deadline never stops it: a timeout no clock can hold is never due,
    and a run whose `time_out` raises is passed over.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, BaseTaskRun, float, float]] = []
        self._counter = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, run: BaseTaskRun, timeout: float, grace: float = 0.0) -> None:
        """Call `run.time_out(timeout)` if it is still running `timeout` seconds after its
        work began to run (`timeout + grace`: the work was told to stop itself at
        `timeout`). Time the work waits in its runner's queue does not count (see
        `BaseTaskRun.mark_queued`).

        A timeout that is not a number of seconds a clock can hold (NaN,
        infinite, beyond `MAX_SECONDS`) never falls due.
        """
        if not enforceable(timeout):
            return
        with self._wakeup:
            heapq.heappush(
                self._heap,
                (time.monotonic() + timeout + grace, next(self._counter), run, timeout, grace),
            )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="opus-deadlines", daemon=True
                )
                self._thread.start()
            self._wakeup.notify()

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap:
                    self._wakeup.wait()
                deadline, _, run, timeout, grace = self._heap[0]
                now = time.monotonic()
                delay = deadline - now
                if delay > 0:
                    self._wakeup.wait(min(delay, threading.TIMEOUT_MAX))
                    continue
                heapq.heappop(self._heap)
                since = run.running_since
                if not run.done() and (since is None or since + timeout + grace > now):
                    # Queued, or began later than it was submitted: due later.
                    later = now + QUEUED_CHECK if since is None else since + timeout + grace
                    entry = (later, next(self._counter), run, timeout, grace)
                    heapq.heappush(self._heap, entry)
                    continue
            try:
                if not run.done():
                    run.time_out(timeout)
            except Exception:  # a broken run class: it alone goes unwatched
                pass


deadlines = DeadlineWatcher()
"""The process-wide watcher used by the engine and `@task`."""
