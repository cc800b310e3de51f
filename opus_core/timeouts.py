"""Enforcing timeouts: an alarm for work running in the caller, a watcher for the rest."""

from __future__ import annotations

import heapq
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opus_core.errors import TaskTimeoutError

if TYPE_CHECKING:
    from opus_core.runners.base import BaseTaskRun


class _Alarm(BaseException):
    """Raised into the work by SIGALRM; a BaseException so `except Exception` cannot swallow it."""


def call_with_alarm(fn: Callable[[], Any], timeout: float | None, name: str) -> Any:
    """Call `fn()`, raising `TaskTimeoutError` if it runs longer than `timeout` seconds.

    In the main thread the call is interrupted by SIGALRM. Elsewhere a signal
    cannot reach it, so the call runs to its end and then counts as timed out.
    """
    if timeout is None:
        return fn()
    message = f"task {name!r} timed out after {timeout:g}s"
    if threading.current_thread() is not threading.main_thread():
        start = time.monotonic()
        value = fn()
        if time.monotonic() - start > timeout:
            raise TaskTimeoutError(message)
        return value

    def on_alarm(_signum: int, _frame: object) -> None:
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    except _Alarm:
        raise TaskTimeoutError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class DeadlineWatcher:
    """One daemon thread that times out runs whose deadline has passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, BaseTaskRun, float]] = []
        self._counter = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, run: BaseTaskRun, timeout: float) -> None:
        """Call `run.time_out(timeout)` if it is still running `timeout` seconds from now."""
        with self._wakeup:
            heapq.heappush(
                self._heap, (time.monotonic() + timeout, next(self._counter), run, timeout)
            )
            if self._thread is None:
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
                deadline, _, run, timeout = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wakeup.wait(delay)
                    continue
                heapq.heappop(self._heap)
            if not run.done():
                run.time_out(timeout)


deadlines = DeadlineWatcher()
"""The process-wide watcher used by the engine and `@task`."""
