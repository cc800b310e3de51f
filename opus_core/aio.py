"""Running `async def` work where opus expects a plain call.

A task function or a `process_task` written with `async def` returns a
coroutine; `run_coroutine` runs it to its end on an event loop of its own,
whatever runner the call happens on, and cancels it when its time is up.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from opus_core.errors import TaskTimeoutError
from opus_core.timeouts import enforceable


def is_async(fn: object) -> bool:
    """Whether calling `fn` returns a coroutine (an `async def` function or method,
    a `functools.partial` of one, or an object whose `__call__` is one)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - a callable object's own method
    return call is not None and not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def run_coroutine(awaitable: Awaitable[Any], timeout: float | None, name: str) -> Any:
    """Run `awaitable` to its end and return its value.

    With a `timeout` (seconds), the coroutine is cancelled when it runs out, and
    `TaskTimeoutError` raised. The coroutine gets an event loop of its own: in
    this thread, or, when this thread already runs a loop (a task called from
    async code on the `sequential` runner), in a thread started for it, so the
    caller's loop is never re-entered.
    """
    import asyncio  # here: asyncio is large and most tasks are not async

    async def main() -> Any:
        if timeout is None or not enforceable(timeout):
            return await awaitable
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise TaskTimeoutError(f"task {name!r} timed out after {timeout:g}s") from None
            raise

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    return _in_thread(lambda: asyncio.run(main()), name)


def _in_thread(fn: Callable[[], Any], name: str) -> Any:
    """`fn()` called in a new thread, this one waiting for it; its exception re-raised here."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome.append((False, exc))

    context = contextvars.copy_context()  # the attempt's output is kept from there too
    thread = threading.Thread(
        target=context.run, args=(target,), name=f"opus-async-{name}", daemon=True
    )
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
