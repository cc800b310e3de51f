"""Function tasks: `@task`, runs that feed runs, `map`, and waiting on many runs.

Calling a task function starts it on a runner and returns its run. A run passed
to another call (as an argument, or inside a list, tuple, set or dict) is
replaced by its result before the function runs; the dependent starts when its
inputs are done, without blocking the caller or holding a worker meanwhile.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar, overload

from opus_core.aio import is_async, run_coroutine
from opus_core.errors import TaskTimeoutError
from opus_core.report import TaskStatus
from opus_core.runners import BaseTaskRun, Runner, RunnerSpec, resolve_runner
from opus_core.runners.base import SIGNAL_CHECK, Attempted, upstream_failure
from opus_core.timeouts import call_with_alarm, check_task_number, deadlines

P = ParamSpec("P")
R = TypeVar("R")

ALL_COMPLETED = "ALL_COMPLETED"
"""`wait` returns when every run has ended."""
FIRST_COMPLETED = "FIRST_COMPLETED"
"""`wait` returns when any run ends."""
FIRST_EXCEPTION = "FIRST_EXCEPTION"
"""`wait` returns when any run ends with an exception (or all have ended)."""

CANCEL_GRACE = 1.0
"""Seconds an `async def` task that timed out has to end after its coroutine is cancelled,
before the runner stops it the hard way (kills its process, abandons its thread)."""

_MAX_DEPTH = 100
"""How deep inside nested containers runs are looked for."""


class _Call:
    """What a runner executes for one `@task` call: retries, alarm and coroutines included."""

    __slots__ = ("alarm", "fn", "is_async", "opus_name", "retries", "retry_sleep_time", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        retries: int,
        retry_sleep_time: float,
        alarm: float | None,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.opus_name = name
        self.retries = retries
        self.retry_sleep_time = retry_sleep_time
        self.alarm = alarm
        self.timeout = timeout
        self.is_async = is_async(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Attempted:
        if self.is_async:  # the coroutine is cancelled when its time is up, on any runner
            return self._attempts(args, kwargs)
        return call_with_alarm(lambda: self._attempts(args, kwargs), self.alarm, self.opus_name)  # type: ignore[no-any-return]

    def _attempts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Attempted:
        attempt = 0
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            attempt += 1
            try:
                if self.is_async:
                    left = None if deadline is None else max(deadline - time.monotonic(), 1e-6)
                    value = run_coroutine(self.fn(*args, **kwargs), left, self.opus_name)
                else:
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


# -- runs given as inputs ----------------------------------------------------

_CONTAINERS = (list, tuple, set, frozenset, dict)


def find_runs(value: Any, by_value: set[BaseTaskRun] | None = None) -> list[BaseTaskRun]:
    """The runs in `value` (itself, or inside lists, tuples, sets and dicts), each once.

    Runs that must be passed as values even to a runner with handles are also
    added to `by_value`, when given: dict keys, members of frozensets, and what
    sits in subclasses of the containers (a namedtuple excepted), where a
    runner's handle would not be found and swapped for the value.
    """
    found: dict[int, BaseTaskRun] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, plain = stack.pop()
        if isinstance(item, BaseTaskRun):
            found.setdefault(id(item), item)
            if plain and by_value is not None:
                by_value.add(item)
        elif isinstance(item, _CONTAINERS) and depth < _MAX_DEPTH:
            if id(item) in seen:
                continue
            seen.add(id(item))
            inner = plain or not _handles_pass(item)
            if isinstance(item, dict):
                stack.extend((k, depth + 1, True) for k in item)
                stack.extend((v, depth + 1, inner) for v in item.values())
            else:
                stack.extend((x, depth + 1, inner) for x in item)
    return list(found.values())


def _handles_pass(container: object) -> bool:
    """Whether a runner's handle inside `container` reaches the work as the value."""
    kind = type(container)
    return kind in (list, tuple, set, dict) or (kind.__base__ is tuple and hasattr(kind, "_make"))


_NO_KEYS: frozenset[BaseTaskRun] = frozenset()


def _call_runs(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[BaseTaskRun], set[BaseTaskRun] | frozenset[BaseTaskRun]]:
    """The runs among a call's arguments and those of them used as dict keys
    (`find_runs`, quicker when no argument is a container)."""
    runs: list[BaseTaskRun] = []
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, BaseTaskRun):
            runs.append(value)
        elif isinstance(value, _CONTAINERS):
            by_value: set[BaseTaskRun] = set()
            return find_runs((args, kwargs), by_value), by_value
    return (list(dict.fromkeys(runs)) if len(runs) > 1 else runs), _NO_KEYS


def _replace_runs(value: Any, swap: Callable[[BaseTaskRun], Any], depth: int = 0) -> Any:
    """`value` with each run in it replaced by `swap(run)`; containers without runs are kept."""
    if isinstance(value, BaseTaskRun):
        return swap(value)
    if depth >= _MAX_DEPTH or not isinstance(value, (list, tuple, set, frozenset, dict)):
        return value
    if not _handles_pass(value):
        swap = _value
    if isinstance(value, dict):
        items = [
            (_replace_runs(k, _value, depth + 1), _replace_runs(v, swap, depth + 1))
            for k, v in value.items()
        ]
        if all(a is k and b is v for (a, b), (k, v) in zip(items, value.items(), strict=True)):
            return value
        return _rebuild(value, items)
    elements = [_replace_runs(x, swap, depth + 1) for x in value]
    if all(a is b for a, b in zip(elements, value, strict=True)):
        return value
    return _rebuild(value, elements)


def _rebuild(container: Any, items: list[Any]) -> Any:
    kind = type(container)
    if kind in (list, tuple, set, frozenset, dict):
        return kind(items)
    if isinstance(container, tuple) and hasattr(container, "_make"):  # a namedtuple
        return container._make(items)
    try:
        return kind(items)
    except Exception as exc:
        raise TypeError(
            f"cannot pass runs inside a {kind.__name__}: rebuilding it failed ({exc}); "
            "use a list, tuple, set or dict"
        ) from None


class _Inputs:
    """A done callback on a call's unfinished inputs: after the last, start the work.

    If an input did not succeed, the call's run ends with `UpstreamFailedError`
    instead. Nothing blocks while the inputs run.
    """

    __slots__ = ("pending", "run", "start")

    def __init__(self, run: BaseTaskRun, start: Callable[[], None], pending: int) -> None:
        self.run = run
        self.start = start
        self.pending = pending

    def __call__(self, given: BaseTaskRun) -> None:
        run = self.run
        if run._status is not None:  # stopped, or an earlier input failed
            return
        status = given._status
        if status is not TaskStatus.SUCCEEDED and status is not TaskStatus.RESTORED:
            run._finish(exception=upstream_failure(run.name, (given,)))
            return
        if self.pending > 1:  # (with one input, its callback alone counts down)
            with run._lock:
                self.pending -= 1
                if self.pending:
                    return
        try:
            self.start()
        except BaseException as exc:  # the runner refused the work: this run failed
            run._finish(exception=exc)


class ComposedRun(BaseTaskRun):
    """The run of a call whose inputs had not ended, on a runner that cannot `prepare` runs.

    Once the inputs end, the work is submitted and this run follows the run
    `submit` returned (`inner`).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inner: BaseTaskRun | None = None
        """The run of the work itself, once started."""

    def _adopt(self, inner: BaseTaskRun) -> None:
        self.inner = inner
        if self.done():  # stopped while the work was being started
            inner.stop()
        else:
            inner.add_done_callback(self._follow)

    def _follow(self, inner: BaseTaskRun) -> None:
        self.attempts = inner.attempts
        self._finish(value=inner._value, exception=inner._exception, status=inner._status)

    def _halt(self) -> None:
        if self.inner is not None:
            self.inner.stop()

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The work's value (fetched from the work's own run, which may hold it remotely)."""
        if not self.wait(timeout):
            raise TimeoutError(f"task run {self.instance_name} did not finish within {timeout}s")
        inner = self.inner
        if self._exception is None and inner is not None:
            return inner.get_result(0, raise_exceptions)
        return super().get_result(0, raise_exceptions)


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
        self._async = is_async(fn)
        self._plain = (
            retries == 0 and self.name == getattr(fn, "__name__", None) and not self._async
        )

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
        """Start the task with these arguments; `submit` without `wait_for`."""
        return self._start(self._runner(), args, kwargs, ())

    def submit(
        self, *args: Any, wait_for: Iterable[BaseTaskRun] = (), **kwargs: Any
    ) -> BaseTaskRun:
        """Start the task once the runs in `wait_for` (and those among the arguments) ended.

        `wait_for` orders without passing a value: if one of those runs does not
        succeed, this one does not run either (`UpstreamFailedError`).
        """
        waits = tuple(wait_for)
        for run in waits:
            if not isinstance(run, BaseTaskRun):
                raise TypeError(f"wait_for takes task runs, got {type(run).__name__} ({run!r})")
        return self._start(self._runner(), args, kwargs, waits)

    def map(self, *iterables: Any, **kwargs: Any) -> RunList:
        """Start one run per element: `fn(a, b, **kwargs)` for each `(a, b)` of `zip(*iterables)`.

        `unmapped(x)` passes `x` whole to every run; keyword arguments are passed
        whole. Runs among the elements are resolved like any input.
        """
        if not iterables:
            raise TypeError(f"{self.name}.map() needs at least one iterable to map over")
        columns: list[Any] = []
        for position, iterable in enumerate(iterables, 1):
            if isinstance(iterable, unmapped):
                columns.append(None)
            elif isinstance(iterable, (str, bytes, BaseTaskRun)) or not _iterable(iterable):
                what = (
                    "a task run" if isinstance(iterable, BaseTaskRun) else type(iterable).__name__
                )
                raise TypeError(
                    f"{self.name}.map() argument {position} is {what}, not something to map "
                    "over; pass a list (or a RunList), or wrap it in unmapped(...) to give it "
                    "whole to every run"
                )
            else:
                columns.append(list(iterable))
        mapped = [c for c in columns if c is not None]
        if not mapped:
            raise TypeError(f"{self.name}.map() needs at least one argument not in unmapped()")
        length = min(len(c) for c in mapped)
        full = [
            [iterables[i].value] * length if c is None else c[:length]
            for i, c in enumerate(columns)
        ]
        kwargs = {k: v.value if isinstance(v, unmapped) else v for k, v in kwargs.items()}
        runner = self._runner()
        keys: set[BaseTaskRun] = set()
        ready = self._all_ready(runner, find_runs((full, kwargs), keys), keys)
        if ready is not None:  # nothing to wait for: start them all at once
            return RunList(self._launch_many(runner, full, kwargs, ready))
        return RunList(self._start(runner, row, kwargs, ()) for row in zip(*full, strict=True))

    # -- starting runs --------------------------------------------------------

    def _all_ready(
        self, runner: Runner, inputs: list[BaseTaskRun], keys: set[BaseTaskRun]
    ) -> list[BaseTaskRun] | None:
        """`inputs` if none needs waiting for (ended, or passed as the runner's own handle)."""
        for run in inputs:
            if run._status is None and (run in keys or runner.input_handle(run) is None):
                return None
        return inputs

    def _start(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits: tuple[BaseTaskRun, ...],
    ) -> BaseTaskRun:
        inputs, keys = _call_runs(args, kwargs) if args or kwargs else ([], _NO_KEYS)
        if not inputs and not waits:
            return self._submit(runner, args, kwargs)  # the plain call: nothing to resolve
        if runner.blocking:  # runs in the caller: so does the waiting
            for given in (*inputs, *waits):
                given.wait()
        pending = [r for r in waits if r._status is None]
        pending += [
            r
            for r in inputs
            if r._status is None and (r in keys or runner.input_handle(r) is None)
        ]
        if not pending:
            return self._launch(runner, args, kwargs, inputs, waits)
        fn, timeout = self._callable(runner)
        prepared = runner.prepare(fn)
        start: Callable[[], None]
        if prepared is not None:
            run: BaseTaskRun = prepared
            start = functools.partial(
                self._launch_into, runner, prepared, fn, timeout, args, kwargs, inputs, waits
            )
        else:
            run = composed = ComposedRun(self.name)
            launch = functools.partial(self._launch, runner, args, kwargs, inputs, waits)

            def start() -> None:
                composed._adopt(launch())

        waiter = _Inputs(run, start, len(pending))
        for given in pending:
            given.add_done_callback(waiter)
        return run

    def _launch_into(
        self,
        runner: Runner,
        run: BaseTaskRun,
        fn: Callable[..., Any],
        timeout: float | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[BaseTaskRun],
        waits: tuple[BaseTaskRun, ...],
    ) -> None:
        """Start the work into `run`, made by `runner.prepare`, now that the inputs ended."""
        failed = upstream_failure(self.name, (*waits, *inputs) if waits else tuple(inputs))
        if failed is not None:
            run._finish(exception=failed)
            return
        args, kwargs = _resolved(runner, args, kwargs)
        run._inputs = tuple(inputs)
        runner.submit_prepared(run, fn, *args, **kwargs)
        if timeout is not None:
            deadlines.watch(run, timeout)

    def _launch(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[BaseTaskRun],
        waits: tuple[BaseTaskRun, ...],
    ) -> BaseTaskRun:
        """Start the work now: every input has ended or travels as the runner's handle."""
        failed = upstream_failure(self.name, (*waits, *inputs))
        if failed is not None:
            run = BaseTaskRun(self.name)
            run._finish(exception=failed)
            return run
        if inputs:
            args, kwargs = _resolved(runner, args, kwargs)
        run = self._submit(runner, args, kwargs)
        if inputs:
            run._inputs = tuple(inputs)
        return run

    def _launch_many(
        self,
        runner: Runner,
        columns: list[list[Any]],
        kwargs: dict[str, Any],
        inputs: list[BaseTaskRun],
    ) -> list[BaseTaskRun]:
        """Start one run per row of `columns` through `runner.submit_map`; inputs all ready."""
        if inputs and upstream_failure(self.name, tuple(inputs)) is not None:
            return [
                self._launch(runner, row, kwargs, find_runs(row), ())
                for row in zip(*columns, strict=True)
            ]
        fn, timeout = self._callable(runner)
        given, given_kwargs = columns, kwargs
        if inputs:
            swap = functools.partial(_swap, runner)
            columns = [_replace_runs(c, swap) for c in columns]
            kwargs = _replace_runs(kwargs, swap)
        runs = runner.submit_map(fn, columns, kwargs)
        if inputs:
            for run, row in zip(runs, zip(*given, strict=True), strict=True):
                found = find_runs((row, given_kwargs))
                if found:
                    run._inputs = tuple(found)
        if timeout is not None:
            for run in runs:
                deadlines.watch(run, timeout)
        return runs

    def _callable(self, runner: Runner) -> tuple[Callable[..., Any], float | None]:
        """What the runner is given to call, and the timeout the deadline watcher enforces."""
        alarm = self.timeout if runner.blocking else None
        if self._plain and alarm is None:
            fn: Callable[..., Any] = self.fn  # nothing to add around the call
        else:
            fn = _Call(self.fn, self.name, self.retries, self.retry_sleep_time, alarm, self.timeout)
        if runner.blocking or self.timeout is None:
            return fn, None
        if self._async:  # cancelled inside first, so it can clean up; killed only if it won't
            return fn, self.timeout + CANCEL_GRACE
        return fn, self.timeout

    def _submit(self, runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseTaskRun:
        fn, timeout = self._callable(runner)
        run = runner.submit(fn, *args, **kwargs)
        if timeout is not None:
            deadlines.watch(run, timeout)
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


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return True


def _resolved(
    runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments with each run replaced by its value or its runner's handle."""
    swap = functools.partial(_swap, runner)
    resolved = tuple(
        [
            _swap(runner, a)
            if isinstance(a, BaseTaskRun)
            else _replace_runs(a, swap, 1)
            if isinstance(a, _CONTAINERS)
            else a
            for a in args
        ]
    )
    return resolved, _replace_runs(kwargs, swap) if kwargs else kwargs


def _value(run: BaseTaskRun) -> Any:
    return run.get_result(0)


def _swap(runner: Runner, run: BaseTaskRun) -> Any:
    """What replaces an input run: the runner's own handle for it, else its value."""
    handle = runner.input_handle(run)
    return run.get_result(0) if handle is None else handle


class unmapped:
    """A value `TaskFunction.map` passes whole to every run instead of mapping over it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"unmapped({self.value!r})"


class RunList(list[BaseTaskRun]):
    """The runs `TaskFunction.map` started, in the order of the elements."""

    def done(self) -> bool:
        """True once every run has ended."""
        return all(run.done() for run in self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every run ended or `timeout` seconds passed; True if all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for run in self:
            if run._status is None and not run.wait(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            ):
                return False
        return True

    def get_results(self, timeout: float | None = None, raise_exceptions: bool = True) -> list[Any]:
        """Every run's value, in order.

        Raises the first failure in order (or, with `raise_exceptions=False`, puts
        each exception in its place) and `TimeoutError` if the runs do not all
        end within `timeout` seconds.
        """
        if not self.wait(timeout):
            left = sum(1 for run in self if not run.done())
            raise TimeoutError(f"{left} of {len(self)} runs did not finish within {timeout}s")
        return [run.get_result(0, raise_exceptions) for run in self]


class DoneAndNotDone(NamedTuple):
    """What `wait` returns: the runs that ended and those that did not."""

    done: set[BaseTaskRun]
    not_done: set[BaseTaskRun]


def _failed(run: BaseTaskRun) -> bool:
    return run._exception is not None


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
        run.add_done_callback(on_done)
    try:
        _sleep_until(woken, timeout)
    finally:
        for run in waiting:
            run._discard_callback(on_done)
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
            run._discard_callback(ended.put)
