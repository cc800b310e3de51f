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
from opus_core.runners.base import SIGNAL_CHECK, Attempted, Work, upstream_failure
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

_MAX_DEPTH = 200
"""How deeply nested in containers a run may be passed (any depth is found; deeper ones
are refused with a clear error rather than risk Python's recursion limit)."""


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
        # A coroutine is cancelled when its time is up; the alarm (in the caller's main
        # thread) comes only if it does not end within the grace that gives it.
        grace = CANCEL_GRACE if self.is_async else 0.0
        return call_with_alarm(  # type: ignore[no-any-return]
            lambda: self._attempts(args, kwargs), self.alarm, self.opus_name, grace
        )

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


class Found:
    """The runs among a call's arguments, as `scan` finds them.

    `by_value` holds the runs that must be passed as values even to a runner
    with handles (dict keys, members of frozensets, runs inside subclasses of
    the containers, a namedtuple or `RunList` excepted: a runner would not find
    its handle there; and every run when containers holding them are shared or
    hold themselves, which a runner's own walk may not survive); `holders` the
    ids of the containers that hold a run, directly or not — the only ones rebuilt.
    """

    __slots__ = ("by_value", "holders", "runs")

    def __init__(
        self,
        runs: list[BaseTaskRun],
        by_value: set[BaseTaskRun] | frozenset[BaseTaskRun] = frozenset(),
        holders: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        self.runs = runs
        self.by_value = by_value
        self.holders = holders


def scan(values: Iterable[Any]) -> Found:
    """Find the runs in `values`: each value itself, or inside lists, tuples, sets and
    dicts at any depth (shared and self-containing containers are walked once)."""
    found: dict[int, BaseTaskRun] = {}
    by_value: set[BaseTaskRun] = set()
    holders: set[int] = set()
    parents: dict[int, list[int]] = {}
    stack: list[tuple[Any, int, bool]] = [(value, 0, False) for value in values]
    tangled = False  # a container met twice (shared, or holding itself)
    while stack:
        item, parent, plain = stack.pop()
        if isinstance(item, BaseTaskRun):
            found.setdefault(id(item), item)
            if plain:
                by_value.add(item)
            if parent:
                _hold(parent, holders, parents)
        elif isinstance(item, _CONTAINERS):
            key = id(item)
            if key in parents:  # met before: only its new parent matters
                tangled = True
                if parent:
                    parents[key].append(parent)
                    if key in holders:  # what holds runs now has one more container above
                        _hold(parent, holders, parents)
                continue
            parents[key] = [parent] if parent else []
            inner = plain or not _handles_pass(item)
            if isinstance(item, dict):
                stack.extend((k, key, True) for k in item)
                stack.extend((v, key, inner) for v in item.values())
            else:
                stack.extend((x, key, inner) for x in item)
    runs = list(found.values())
    if tangled and holders:  # a runner walking its handles could loop or go exponential
        by_value.update(runs)
    return Found(runs, by_value, holders)


def _hold(container: int, holders: set[int], parents: dict[int, list[int]]) -> None:
    """Mark `container` and every container above it as holding a run."""
    climb = [container]
    while climb:
        holder = climb.pop()
        if holder not in holders:
            holders.add(holder)
            climb.extend(parents.get(holder, ()))


def _handles_pass(container: object) -> bool:
    """Whether a runner's handle inside `container` reaches the work as the value."""
    kind = type(container)
    return kind in (list, tuple, set, dict, RunList) or (
        kind.__base__ is tuple and hasattr(kind, "_make")
    )


_NOTHING = Found([])


def _call_runs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Found:
    """`scan` of a call's arguments, quicker when no argument is a container."""
    runs: list[BaseTaskRun] = []
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, BaseTaskRun):
            runs.append(value)
        elif isinstance(value, _CONTAINERS):
            return scan((*args, *kwargs.values()))
    return Found(list(dict.fromkeys(runs)) if len(runs) > 1 else runs)


def _replace(
    value: Any,
    swap: Callable[[BaseTaskRun], Any],
    found: Found,
    made: dict[int, Any],
    depth: int = 0,
) -> Any:
    """`value` with each run in it replaced by `swap(run)`.

    Only containers that hold runs are rebuilt, each once (`made`), so shared
    containers stay shared and a list or dict that holds itself still does.
    """
    if isinstance(value, BaseTaskRun):
        return _value(value) if value in found.by_value else swap(value)
    key = id(value)
    if key not in found.holders:
        return value
    if key in made:
        return made[key]
    if depth > _MAX_DEPTH:
        raise TypeError(
            f"runs are nested more than {_MAX_DEPTH} containers deep in a task's arguments; "
            "pass them nearer the top"
        )
    if not _handles_pass(value):
        swap = _value

    def inner(item: Any, by: Callable[[BaseTaskRun], Any] = swap) -> Any:
        return _replace(item, by, found, made, depth + 1)

    if isinstance(value, (list, dict, set)):  # mutable: made first, so cycles close
        kind = type(value)
        if kind in (list, RunList):
            new: Any = []
        elif kind in (dict, set):
            new = kind()
        else:
            import copy  # here: only container subclasses need it

            new = copy.copy(value)  # keeps the subclass and its attributes (a default_factory)
            new.clear()
        made[key] = new
        if isinstance(value, dict):
            for k, v in list(value.items()):
                new[inner(k, _value)] = inner(v)
        elif isinstance(value, list):
            new.extend([inner(x) for x in value])
        else:
            new.update([inner(x) for x in value])
        return new
    made[key] = value  # an immutable on a cycle back to itself is met as it was
    items = [inner(x) for x in value]
    if isinstance(value, tuple) and hasattr(value, "_make"):  # a namedtuple
        result = value._make(items)
    else:
        try:
            result = type(value)(items)
        except Exception as exc:
            raise TypeError(
                f"cannot pass runs inside a {type(value).__name__}: rebuilding it failed ({exc}); "
                "use a list, tuple, set or dict"
            ) from None
    made[key] = result
    return result


class _Inputs:
    """A done callback on a call's unfinished inputs: after the last, start the work.

    If an input did not succeed, the call's run ends with `UpstreamFailedError`
    instead. Nothing blocks while the inputs run. It holds the call until then:
    one object per waiting call, no closures.
    """

    __slots__ = (
        "args",
        "found",
        "kwargs",
        "lock",
        "pending",
        "prepared",
        "run",
        "runner",
        "task",
        "waits",
    )

    def __init__(
        self,
        task: TaskFunction[..., Any],
        runner: Runner,
        run: BaseTaskRun,
        prepared: tuple[Callable[..., Any], float | None] | None,
        call: tuple[tuple[Any, ...], dict[str, Any], Found, tuple[BaseTaskRun, ...]],
        pending: int,
    ) -> None:
        self.task = task
        self.runner = runner
        self.run = run
        self.prepared = prepared  # (fn, timeout) for a run from `runner.prepare`
        self.args, self.kwargs, self.found, self.waits = call
        self.pending = pending
        self.lock = threading.Lock() if pending > 1 else None

    def __call__(self, given: BaseTaskRun) -> None:
        run = self.run
        if run.status is not None:  # stopped, or an earlier input failed
            return
        status = given.status
        if status is not TaskStatus.SUCCEEDED and status is not TaskStatus.RESTORED:
            run.finish(exception=upstream_failure(run.name, (given,)))
            return
        if self.lock is not None:  # (with one input, its callback alone counts down)
            with self.lock:
                self.pending -= 1
                if self.pending:
                    return
        try:
            if self.prepared is not None:
                fn, timeout = self.prepared
                self.task._launch_into(
                    self.runner, run, fn, timeout, self.args, self.kwargs, self.found, self.waits
                )
            else:
                launched = self.task._launch(
                    self.runner, self.args, self.kwargs, self.found, self.waits
                )
                run._adopt(launched)  # type: ignore[attr-defined]
        except BaseException as exc:  # the runner refused the work: this run failed
            run.finish(exception=exc)


class ComposedRun(BaseTaskRun):
    """The run of a call whose inputs had not ended, on a runner that cannot `prepare` runs.

    Once the inputs end, the work is submitted and this run follows the run
    `submit` returned (`inner`).
    """

    __slots__ = ("inner",)

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
        status, value, exception = inner.outcome()
        self.finish(value=value, exception=exception, status=status)

    def halt(self) -> None:
        """Stop the work's own run."""
        if self.inner is not None:
            self.inner.stop()

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The work's value (fetched from the work's own run, which may hold it remotely)."""
        if not self.wait(timeout):
            raise TimeoutError(f"task run {self.instance_name} did not finish within {timeout}s")
        inner = self.inner
        if self.exception() is None and inner is not None:
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
        # An async task is cancelled inside at its timeout, so it can clean up, and
        # stopped the hard way (process killed, thread abandoned) only after this.
        self._grace = CANCEL_GRACE if self._async else 0.0
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
        whole. Runs among the elements are resolved like any input. As with
        `zip`, the shortest iterable ends the map (one may be endless).
        """
        if not iterables:
            raise TypeError(f"{self.name}.map() needs at least one iterable to map over")
        import itertools  # here: only map needs it

        sources: list[Iterable[Any]] = []
        for position, iterable in enumerate(iterables, 1):
            if isinstance(iterable, unmapped):
                sources.append(itertools.repeat(iterable.value))
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
                sources.append(iterable)
        if all(isinstance(i, unmapped) for i in iterables):
            raise TypeError(f"{self.name}.map() needs at least one argument not in unmapped()")
        rows = list(zip(*sources))  # noqa: B905 - zip semantics: the shortest ends the map
        kwargs = {k: v.value if isinstance(v, unmapped) else v for k, v in kwargs.items()}
        runner = self._runner()
        found = scan([*itertools.chain.from_iterable(rows), *kwargs.values()])
        if self._ready(runner, found):  # nothing to wait for: start them all at once
            return RunList(self._launch_many(runner, rows, kwargs, found))
        return RunList(self._start(runner, row, kwargs, ()) for row in rows)

    # -- starting runs --------------------------------------------------------

    @staticmethod
    def _ready(runner: Runner, found: Found) -> bool:
        """Whether no input needs waiting for (each ended, or passed as the runner's handle)."""
        by_value = found.by_value
        for run in found.runs:
            if run.status is None and (run in by_value or runner.input_handle(run) is None):
                return False
        return True

    def _start(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits: tuple[BaseTaskRun, ...],
    ) -> BaseTaskRun:
        found = _call_runs(args, kwargs) if args or kwargs else _NOTHING
        inputs = found.runs
        if not inputs and not waits:
            return self._submit(runner, args, kwargs)  # the plain call: nothing to resolve
        if runner.blocking:  # runs in the caller: so does the waiting
            for given in (*inputs, *waits):
                given.wait()
        by_value = found.by_value
        pending = [r for r in waits if r.status is None]
        for given in inputs:
            if given.status is None and (given in by_value or runner.input_handle(given) is None):
                pending.append(given)
        if not pending:
            return self._launch(runner, args, kwargs, found, waits)
        call = self._callable(runner)
        prepared = runner.prepare(call[0])
        run: BaseTaskRun
        if prepared is not None:
            run = prepared
            waiter = _Inputs(self, runner, run, call, (args, kwargs, found, waits), len(pending))
        else:
            run = ComposedRun(self.name)
            waiter = _Inputs(self, runner, run, None, (args, kwargs, found, waits), len(pending))
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
        found: Found,
        waits: tuple[BaseTaskRun, ...],
    ) -> None:
        """Start the work into `run`, made by `runner.prepare`, now that the inputs ended."""
        inputs = found.runs
        failed = upstream_failure(self.name, (*waits, *inputs) if waits else tuple(inputs))
        if failed is not None:
            run.finish(exception=failed)
            return
        args, kwargs = _resolved(runner, args, kwargs, found)
        run.inputs = tuple(inputs)
        runner.submit_prepared(run, self._work(fn, args, kwargs))
        if timeout is not None:
            deadlines.watch(run, timeout, self._grace)

    def _launch(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        found: Found,
        waits: tuple[BaseTaskRun, ...],
    ) -> BaseTaskRun:
        """Start the work now: every input has ended or travels as the runner's handle."""
        inputs = found.runs
        failed = upstream_failure(self.name, (*waits, *inputs))
        if failed is not None:
            run = BaseTaskRun(self.name)
            run.finish(exception=failed)
            return run
        if inputs:
            args, kwargs = _resolved(runner, args, kwargs, found)
        run = self._submit(runner, args, kwargs)
        if inputs:
            run.inputs = tuple(inputs)
        return run

    def _launch_many(
        self,
        runner: Runner,
        rows: list[tuple[Any, ...]],
        kwargs: dict[str, Any],
        found: Found,
    ) -> list[BaseTaskRun]:
        """Start one run per row through `runner.submit_map`; every input is ready."""
        if found.runs and upstream_failure(self.name, tuple(found.runs)) is not None:
            return [self._launch(runner, row, kwargs, _call_runs(row, kwargs), ()) for row in rows]
        fn, timeout = self._callable(runner)
        given, shared = rows, _call_runs((), kwargs).runs
        if found.runs:
            swap = functools.partial(_swap, runner)
            made: dict[int, Any] = {}
            rows = [tuple([_replace(x, swap, found, made) for x in row]) for row in rows]
            kwargs = {k: _replace(v, swap, found, made) for k, v in kwargs.items()}
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else []
        runs = runner.submit_map(fn, columns, kwargs) if rows else []
        if found.runs:
            for run, row in zip(runs, given, strict=True):
                inputs = _call_runs(row, {}).runs + shared
                if inputs:
                    run.inputs = tuple(inputs)
        if timeout is not None:
            for run in runs:
                deadlines.watch(run, timeout, self._grace)
        return runs

    def _callable(self, runner: Runner) -> tuple[Callable[..., Any], float | None]:
        """What the runner is given to call, and the timeout the deadline watcher enforces."""
        alarm = self.timeout if runner.blocking else None
        if self._plain and alarm is None:
            fn: Callable[..., Any] = self.fn  # nothing to add around the call
        else:
            fn = _Call(self.fn, self.name, self.retries, self.retry_sleep_time, alarm, self.timeout)
        return fn, None if runner.blocking else self.timeout

    def _work(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Work:
        """What a runner is handed for one call (see `Work`)."""
        return Work(fn, args, kwargs, self.name, "function", timeout=self.timeout)

    def _submit(self, runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BaseTaskRun:
        fn, timeout = self._callable(runner)
        run = runner.submit(self._work(fn, args, kwargs))
        if timeout is not None:
            deadlines.watch(run, timeout, self._grace)
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
    runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any], found: Found
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments with each run replaced by its value or its runner's handle."""
    if not found.holders:  # runs only as arguments themselves: nothing to rebuild
        return tuple([_swap(runner, a) if isinstance(a, BaseTaskRun) else a for a in args]), {
            k: _swap(runner, v) if isinstance(v, BaseTaskRun) else v for k, v in kwargs.items()
        } if kwargs else kwargs
    swap = functools.partial(_swap, runner)
    made: dict[int, Any] = {}
    by_value = found.by_value
    resolved = tuple(
        [
            _swap(runner, a)
            if isinstance(a, BaseTaskRun) and a not in by_value
            else _replace(a, swap, found, made)
            for a in args
        ]
    )
    if kwargs:
        kwargs = {k: _replace(v, swap, found, made) for k, v in kwargs.items()}
    return resolved, kwargs


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
            if run.status is None and not run.wait(
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
        kinds: dict[type[BaseTaskRun], list[BaseTaskRun]] = {}
        for run in self:
            kinds.setdefault(type(run), []).append(run)
        for kind, runs in kinds.items():
            kind.fetch_many(runs)  # remote values come in one round trip, not one each
        return [run.get_result(0, raise_exceptions) for run in self]


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
