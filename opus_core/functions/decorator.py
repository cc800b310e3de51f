"""`@task`: a function made into a task; calling it starts a run on a runner.

A run passed to another call (as an argument, or inside a list, tuple, set or
dict) is replaced by its result before the function runs; the dependent starts
when its inputs are done, without blocking the caller or holding a worker
meanwhile (finding and replacing the runs: `opus_core.functions.inputs`).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from opus_core.aio import is_async, run_coroutine
from opus_core.errors import TaskTimeoutError
from opus_core.functions.caching import FunctionCache, KeyFunction
from opus_core.functions.composed import ComposedRun
from opus_core.functions.gate import checked_needs, configured_gate
from opus_core.functions.inputs import (
    NO_RUNS,
    Found,
    call_runs,
    replace_runs,
    resolve_inputs,
    resolve_values,
    scan,
    stand_in,
    when_all_done,
)
from opus_core.functions.mapping import RunList, mapped_rows
from opus_core.functions.options import check_cache_and_priority, check_options
from opus_core.resources import Needs
from opus_core.results import TaskStatus
from opus_core.runners import BaseTaskRun, Runner, RunnerSpec, resolve_runner
from opus_core.runners.base import Attempted, Work, upstream_failure
from opus_core.timeouts import call_with_alarm, deadlines

P = ParamSpec("P")
R = TypeVar("R")

CANCEL_GRACE = 1.0
"""Seconds an `async def` task that timed out has to end after its coroutine is cancelled,
before the runner stops it the hard way (kills its process, abandons its thread)."""


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
        cache: bool = False,
        cache_expiration: float | None = None,
        cache_key_fn: KeyFunction | None = None,
        resources: Mapping[str, float] | None = None,
        priority: int = 0,
    ) -> None:
        label = name or str(getattr(fn, "__name__", type(fn).__name__))
        check_options(fn, label, name, retries, retry_sleep_time, timeout, runner)
        check_cache_and_priority(label, cache, cache_expiration, cache_key_fn, priority)
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
        self.priority = priority
        """Among calls waiting for resources, higher starts first."""
        self.resources: dict[str, float] = checked_needs(label, resources or {})
        """What each call holds while it runs (capacities in `[resources]`)."""
        self.cache: FunctionCache | None = (
            FunctionCache(self.name, fn, cache_expiration, cache_key_fn) if cache else None
        )
        """The cache of its results, for `@task(cache=True)` (`opus_core.functions.caching`)."""

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
        self,
        *args: Any,
        wait_for: Iterable[BaseTaskRun] = (),
        resources: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> BaseTaskRun:
        """Start the task once the runs in `wait_for` (and those among the arguments) ended.

        `wait_for` orders without passing a value: if one of those runs does not
        succeed, this one does not run either (`UpstreamFailedError`). `resources`
        replaces the task's own needs for this call (see `@task`).
        """
        waits = tuple(wait_for)
        for run in waits:
            if not isinstance(run, BaseTaskRun):
                raise TypeError(f"wait_for takes task runs, got {type(run).__name__} ({run!r})")
        if resources is not None:
            resources = checked_needs(self.name, resources)
        return self._start(self._runner(), args, kwargs, waits, resources)

    def map(self, *iterables: Any, **kwargs: Any) -> RunList:
        """Start one run per element: `fn(a, b, **kwargs)` for each `(a, b)` of `zip(*iterables)`.

        `unmapped(x)` passes `x` whole to every run; keyword arguments are passed
        whole. Runs among the elements are resolved like any input. As with
        `zip`, the shortest iterable ends the map (one may be endless).
        """
        rows, kwargs = mapped_rows(self.name, iterables, kwargs)
        runner = self._runner()
        found = scan([*itertools.chain.from_iterable(rows), *kwargs.values()])
        if self.cache is None and not self.resources and self._ready(runner, found):
            # nothing to wait for, no result to look up, no need to count: all at once
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
        resources: Mapping[str, float] | None = None,
    ) -> BaseTaskRun:
        if self.cache is not None or self.resources or resources:
            needs = self._needs(resources) if self.resources or resources else ()
            return self._start_managed(runner, args, kwargs, waits, needs)
        found = call_runs(args, kwargs) if args or kwargs else NO_RUNS
        if not found.runs and not waits:
            return self._submit(runner, args, kwargs)  # the plain call: nothing to resolve
        pending = self._pending(runner, found, waits)
        if not pending:
            return self._launch(runner, args, kwargs, found, waits)
        call = self._callable(runner)
        prepared = runner.prepare(call[0])
        run = ComposedRun(self.name) if prepared is None else prepared
        waiter = _Inputs(
            self,
            runner,
            run,
            None if prepared is None else call,
            (args, kwargs, found, waits),
            len(pending),
        )
        for given in pending:
            given.add_done_callback(waiter)
        return run

    @staticmethod
    def _pending(runner: Runner, found: Found, waits: tuple[BaseTaskRun, ...]) -> list[BaseTaskRun]:
        """The runs passed (as inputs or in `wait_for`) that must end before the call
        starts: none on a blocking runner, which waits for them here, in the caller."""
        if runner.blocking:
            for given in (*found.runs, *waits):
                given.wait()
        by_value = found.by_value
        pending = [r for r in waits if r.status is None]
        for given in found.runs:
            if given.status is None and (given in by_value or runner.input_handle(given) is None):
                pending.append(given)
        return pending

    def _start_managed(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        waits: tuple[BaseTaskRun, ...],
        needs: Needs,
    ) -> BaseTaskRun:
        """A call of a cached task, or of one that declares resources: once its inputs
        ended, its result from the cache (the run `restored`), else the work started as
        soon as `needs` are free (`opus_core.functions.gate`) — they are given back when
        it ends — and its result saved when it succeeds."""
        found = call_runs(args, kwargs) if args or kwargs else NO_RUNS
        run = ComposedRun(self.name)
        given = (*waits, *found.runs)
        cache = self.cache
        key = ""
        release = configured_gate().release if needs else None

        def launch() -> None:
            if run.done():  # stopped while it waited: nothing to start, nothing to hold
                if release is not None:
                    release(needs)
                return
            try:
                inner = self._launch(runner, args, kwargs, found, waits, dict(needs))
            except BaseException as exc:  # the runner refused the work: this run failed
                if release is not None:
                    release(needs)
                run.finish(exception=exc)
                return
            if cache is not None:  # saved before the run ends: a call right after hits
                inner.add_done_callback(lambda done: cache.save(key, done))
            run._adopt(inner)
            if release is not None:
                inner.add_done_callback(lambda _: release(needs))

        def inputs_ended() -> None:
            nonlocal key
            failed = upstream_failure(self.name, given)
            if failed is not None:
                run.finish(exception=failed)
                return
            if cache is not None:
                try:
                    values, named = resolve_values(args, kwargs, found)
                    key = cache.key(values, named)
                    hit, value = cache.lookup(key)
                except Exception as exc:  # an argument it cannot hash, a failing key function
                    run.finish(exception=exc)
                    return
                if hit:
                    run.finish(value=value, status=TaskStatus.RESTORED)
                    return
            if needs:
                configured_gate().admit(needs, self.priority, launch)
            else:
                launch()

        when_all_done(given, inputs_ended)
        return run

    def _needs(self, resources: Mapping[str, float] | None) -> Needs:
        """This call's needs (`resources`, else the task's), checked against `[resources]`."""
        return configured_gate().needs(
            self.name, self.resources if resources is None else resources
        )

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
        args, kwargs = resolve_inputs(runner, args, kwargs, found)
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
        resources: Mapping[str, float] | None = None,
    ) -> BaseTaskRun:
        """Start the work now: every input has ended or travels as the runner's handle.
        `resources`, the call's needs, replace the task's in what the runner is handed."""
        inputs = found.runs
        failed = upstream_failure(self.name, (*waits, *inputs))
        if failed is not None:
            run = BaseTaskRun(self.name)
            run.finish(exception=failed)
            return run
        if inputs:
            args, kwargs = resolve_inputs(runner, args, kwargs, found)
        run = self._submit(runner, args, kwargs, resources)
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
            return [self._launch(runner, row, kwargs, call_runs(row, kwargs), ()) for row in rows]
        fn, timeout = self._callable(runner)
        given, shared = rows, call_runs((), kwargs).runs
        if found.runs:
            swap = functools.partial(stand_in, runner)
            made: dict[int, Any] = {}
            rows = [tuple([replace_runs(x, swap, found, made) for x in row]) for row in rows]
            kwargs = {k: replace_runs(v, swap, found, made) for k, v in kwargs.items()}
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else []
        runs = runner.submit_map(fn, columns, kwargs) if rows else []
        if found.runs:
            for run, row in zip(runs, given, strict=True):
                inputs = call_runs(row, {}).runs + shared
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

    def _work(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resources: Mapping[str, float] | None = None,
    ) -> Work:
        """What a runner is handed for one call (see `Work`)."""
        needs = self.resources if resources is None else resources
        return Work(fn, args, kwargs, self.name, "function", resources=needs, timeout=self.timeout)

    def _submit(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        resources: Mapping[str, float] | None = None,
    ) -> BaseTaskRun:
        fn, timeout = self._callable(runner)
        run = runner.submit(self._work(fn, args, kwargs, resources))
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
    cache: bool = False,
    cache_expiration: float | None = None,
    cache_key_fn: KeyFunction | None = None,
    resources: Mapping[str, float] | None = None,
    priority: int = 0,
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
    cache: bool = False,
    cache_expiration: float | None = None,
    cache_key_fn: KeyFunction | None = None,
    resources: Mapping[str, float] | None = None,
    priority: int = 0,
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Make a function a task: calling it starts it on a runner and returns a `BaseTaskRun`.

    Bare (`@task`) or with options: `name`, `retries` (extra attempts after a
    failure), `retry_sleep_time` (seconds between attempts), `timeout` (seconds
    for the whole run, retries included) and `runner` (a name, a `Runner`, or
    `SequentialTaskRun` / `MultiprocessTaskRun`; default: the runner in
    `opus.toml`, else `process`).

    `cache=True` reuses the result of an earlier call with equal arguments and the
    same function source, kept in the configured persistence: the call's run is then
    `restored` (see `opus_core.functions.caching`); `cache_expiration` (seconds) ages
    results out, and `cache_key_fn(args, kwargs) -> str` keys calls instead of their
    arguments.
    """
    options: dict[str, Any] = {
        "name": name,
        "retries": retries,
        "retry_sleep_time": retry_sleep_time,
        "timeout": timeout,
        "runner": runner,
        "cache": cache,
        "cache_expiration": cache_expiration,
        "cache_key_fn": cache_key_fn,
        "resources": resources,
        "priority": priority,
    }
    if fn is not None:
        return TaskFunction(fn, **options)

    def decorate(function: Callable[P, R]) -> TaskFunction[P, R]:
        return TaskFunction(function, **options)

    return decorate
