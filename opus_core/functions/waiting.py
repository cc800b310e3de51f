"""Waiting on many runs, as `concurrent.futures` waits on futures: `wait` and `as_completed`."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from opus_core.runners import BaseTaskRun
from opus_core.runners.base import SIGNAL_CHECK

ALL_COMPLETED = "ALL_COMPLETED"
"""`wait` returns when every run has ended."""
FIRST_COMPLETED = "FIRST_COMPLETED"
"""`wait` returns when any run ends."""
FIRST_EXCEPTION = "FIRST_EXCEPTION"
"""`wait` returns when any run ends with an exception (or all have ended)."""


class DoneAndNotDone(NamedTuple):
    """What `wait` returns: the runs that ended and those that did not."""

    done: set[BaseTaskRun]
    not_done: set[BaseTaskRun]


def _failed(run: BaseTaskRun) -> bool:
    return run.exception() is not None


def wait(
    runs: Iterable[BaseTaskRun], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> DoneAndNotDone:
    """Wait for runs as `concurrent.futures.wait` waits for futures.

    Returns `(done, not_done)` when `return_when` is met (`ALL_COMPLETED`,
    `FIRST_COMPLETED`, or `FIRST_EXCEPTION`: a run ended with an exception,
    stopped and timed-out runs included) or after `timeout` seconds.
    """
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(
            f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, "
            f"got {return_when!r}"
        )
    everything = set(runs)
    for run in everything:
        if not isinstance(run, BaseTaskRun):
            raise TypeError(f"wait() takes task runs, got {type(run).__name__} ({run!r})")
    done = {run for run in everything if run.done()}
    lock = threading.Lock()
    woken = threading.Event()

    def met() -> bool:
        if len(done) == len(everything):
            return True
        if return_when == FIRST_COMPLETED:
            return bool(done)
        return return_when == FIRST_EXCEPTION and any(_failed(run) for run in done)

    if met():
        return DoneAndNotDone(done, everything - done)

    def on_done(run: BaseTaskRun) -> None:
        with lock:
            done.add(run)
            if met():
                woken.set()

    waiting = everything - done
    for run in waiting:
        run.before_wait()
    for run in waiting:
        run.add_done_callback(on_done)
    try:
        _sleep_until(woken, timeout)
    finally:
        for run in waiting:
            run.remove_done_callback(on_done)
    with lock:
        ended = set(done)
    return DoneAndNotDone(ended, everything - ended)


def _sleep_until(event: threading.Event, timeout: float | None) -> bool:
    """Wait for `event` in slices, so Ctrl-C is seen; False when `timeout` ran out first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SIGNAL_CHECK if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return event.is_set()
        if event.wait(min(left, SIGNAL_CHECK)):
            return True


def as_completed(
    runs: Iterable[BaseTaskRun], timeout: float | None = None
) -> Iterator[BaseTaskRun]:
    """Yield runs as they end (those already ended first), as `concurrent.futures.as_completed`.

    Raises `TimeoutError` if runs are still running `timeout` seconds after the call.
    """
    everything = list(dict.fromkeys(runs))
    deadline = None if timeout is None else time.monotonic() + timeout
    ended: queue.SimpleQueue[BaseTaskRun] = queue.SimpleQueue()
    waiting = [run for run in everything if not run.done()]
    for run in waiting:
        run.before_wait()
        run.add_done_callback(ended.put)
    try:
        pending = set(waiting)
        for run in everything:
            if run not in pending:
                yield run
        while pending:
            left = SIGNAL_CHECK if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(pending)} of {len(everything)} runs did not finish within {timeout}s"
                )
            try:
                run = ended.get(timeout=min(left, SIGNAL_CHECK))
            except queue.Empty:
                continue
            if run in pending:
                pending.discard(run)
                yield run
    finally:
        for run in waiting:
            run.remove_done_callback(ended.put)
