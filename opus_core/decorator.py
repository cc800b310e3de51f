"""`@task`: a function that starts on a runner when called and returns its run handle."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from opus_core.errors import TaskTimeoutError
from opus_core.runners import BaseTaskRun, Runner, RunnerSpec, resolve_runner
from opus_core.runners.base import Attempted
from opus_core.timeouts import call_with_alarm, check_task_number, deadlines

P = ParamSpec("P")
R = TypeVar("R")


class _Call:
    """What a runner executes for one `@task` call: retries and alarm included."""

    __slots__ = ("alarm", "fn", "opus_name", "retries", "retry_sleep_time")

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        retries: int,
        retry_sleep_time: float,
        alarm: float | None,
    ) -> None:
        self.fn = fn
        self.opus_name = name
        self.retries = retries
        self.retry_sleep_time = retry_sleep_time
        self.alarm = alarm

    def __call__(self, *args: Any, **kwargs: Any) -> Attempted:
        return call_with_alarm(lambda: self._attempts(args, kwargs), self.alarm, self.opus_name)  # type: ignore[no-any-return]

    def _attempts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Attempted:
        attempt = 0
        while True:
            attempt += 1
            try:
                value = self.fn(*args, **kwargs)
            except Exception as exc:
                if attempt > self.retries or isinstance(exc, TaskTimeoutError):
                    try:
                        exc._opus_attempts = attempt  # type: ignore[attr-defined]
                    except AttributeError:
                        pass
                    raise
                time.sleep(self.retry_sleep_time)
                continue
            return Attempted(value, attempt)


class TaskFunction(Generic[P, R]):
    """A function made into a task by `@task`. Calling it starts a run.

    `.fn` is the plain function (call it to run in the caller without a runner).
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_sleep_time: float = 0,
        timeout: float | None = None,
        runner: RunnerSpec | None = None,
    ) -> None:
        if not callable(fn):
            raise ValueError(f"@task needs a callable, got {fn!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"@task name must be a non-empty string, got {name!r}")
        label = name or str(getattr(fn, "__name__", type(fn).__name__))
        numbers = {"retries": retries, "retry_sleep_time": retry_sleep_time}
        if timeout is not None:
            numbers["timeout"] = timeout
        for key, value in numbers.items():
            try:
                check_task_number(key, value)
            except ValueError as exc:
                raise ValueError(f"@task {exc} (task {label!r})") from None
        if runner is not None and not isinstance(runner, (str, Runner, type)):
            raise ValueError(
                f"@task runner must be a runner name, a Runner, or a run class, got {runner!r}"
            )
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.retries = retries
        self.retry_sleep_time = float(retry_sleep_time)
        self.timeout = None if timeout is None else float(timeout)
        self.runner = runner
        self._resolved: Runner | None = None
        self._plain = retries == 0 and self.name == getattr(fn, "__name__", None)

    def _runner(self) -> Runner:
        if isinstance(self.runner, Runner):
            return self.runner
        if isinstance(self.runner, type):
            if self._resolved is None:
                self._resolved = resolve_runner(self.runner)
            return self._resolved
        from opus_core.assembly import configured_runner

        return configured_runner(self.runner)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> BaseTaskRun:
        runner = self._runner()
        alarm = self.timeout if runner.blocking else None
        if self._plain and alarm is None:
            run = runner.submit(self.fn, *args, **kwargs)  # nothing to add around the call
        else:
            call = _Call(self.fn, self.name, self.retries, self.retry_sleep_time, alarm)
            run = runner.submit(call, *args, **kwargs)
        if self.timeout is not None and not runner.blocking:
            deadlines.watch(run, self.timeout)
        return run

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_sleep_time: float = 0,
    timeout: float | None = None,
    runner: RunnerSpec | None = None,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_sleep_time: float = 0,
    timeout: float | None = None,
    runner: RunnerSpec | None = None,
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Make a function a task: calling it starts it on a runner and returns a `BaseTaskRun`.

    Bare (`@task`) or with options: `name`, `retries` (extra attempts after a
    failure), `retry_sleep_time` (seconds between attempts), `timeout` (seconds
    for the whole run, retries included) and `runner` (a name, a `Runner`, or
    `SequentialTaskRun` / `MultiprocessTaskRun`; default: the runner in
    `opus.toml`, else `process`).
    """
    options: dict[str, Any] = {
        "name": name,
        "retries": retries,
        "retry_sleep_time": retry_sleep_time,
        "timeout": timeout,
        "runner": runner,
    }
    if fn is not None:
        return TaskFunction(fn, **options)

    def decorate(function: Callable[P, R]) -> TaskFunction[P, R]:
        return TaskFunction(function, **options)

    return decorate
