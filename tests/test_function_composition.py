"""Function tasks that feed each other, the same on every runner.

Each test runs on `sequential`, `process`, `processpool`, `threadpool` and `dask` (a real
`LocalCluster`, its worker threads in this process): runs as inputs, nested
in containers, `wait_for`, `map`, `wait` / `as_completed`, failures that skip
what depends on them, `stop()`, timeouts, and `async def` tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from harness import until
from opus_plugin_dask import DaskRunner
from opus_plugin_threadpool import ThreadPoolRunner

from opus_core import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    OpusError,
    RunList,
    TaskStatus,
    UpstreamFailedError,
    as_completed,
    task,
    unmapped,
    wait,
)
from opus_core.function_task import TaskFunction
from opus_core.runners import ProcessPoolRunner, ProcessRunner, Runner, SequentialRunner

RUNNERS = [
    "sequential",
    "process",
    "processpool",
    "threadpool",
    pytest.param("dask", marks=pytest.mark.slow),  # a real cluster
]


class Pair(NamedTuple):
    left: Any
    right: Any


@pytest.fixture(scope="module")
def dask_runner() -> Iterator[DaskRunner]:
    runner = DaskRunner(n_workers=1, threads_per_worker=8, processes=False)
    runner.start()
    yield runner
    runner.shutdown()


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> Iterator[Runner]:
    name = request.param
    if name == "dask":  # the cluster starts only for the tests that run on it
        yield request.getfixturevalue("dask_runner")
        return
    made: Runner = {
        "sequential": SequentialRunner,
        "process": ProcessRunner,
        "processpool": lambda: ProcessPoolRunner(max_workers=4),
        "threadpool": lambda: ThreadPoolRunner(max_workers=8),
    }[name]()
    yield made
    made.shutdown(wait=False)


@pytest.fixture
def on(runner: Runner) -> Callable[..., Any]:
    """`on(fn, **options)`: `fn` made a task on the runner under test."""

    def make(fn: Callable[..., Any], **options: Any) -> TaskFunction[..., Any]:
        return task(runner=runner, **options)(fn)

    return make


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def total(*values: Any) -> int:
    """The sum of every number in `values`, however deeply nested."""
    result = 0
    for value in values:
        if isinstance(value, dict):
            result += total(*value.keys(), *value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            result += total(*value)
        else:
            result += value
    return result


def fail(message: str) -> int:
    raise ValueError(message)


def nap(seconds: float, value: int = 0) -> int:
    time.sleep(seconds)
    return value


def nap_and_mark(seconds: float, value: int, marker: str) -> int:
    """`nap`, then a file saying the nap ended."""
    time.sleep(seconds)
    Path(marker).touch()
    return value


def released(path: str, value: int) -> int:
    """`value` once the file `path` exists (the caller releases the task); -1 if it never does."""
    return value if until(Path(path).exists) else -1


async def ainc(x: int) -> int:
    await asyncio.sleep(0.01)
    return x + 1


def blocking(runner: Runner) -> bool:
    return runner.blocking


# -- runs as inputs ---------------------------------------------------------------------------


def test_a_diamond_of_four_tasks(on: Callable[..., Any]) -> None:
    start, left, right, join = on(inc), on(inc), on(lambda x: x * 10), on(add)
    a = start(1)
    b, c = left(a), right(a)
    d = join(b, c)
    assert d.get_result(timeout=20) == 3 + 20
    assert [r.status for r in (a, b, c, d)] == [TaskStatus.SUCCEEDED] * 4


def test_runs_nested_in_containers_are_resolved(on: Callable[..., Any]) -> None:
    one, summed = on(inc), on(total)
    a, b, c = one(0), one(1), one(2)  # 1, 2, 3
    nested = [a, (b, [c, {10: a}]), {b, 100}, frozenset({c}), {a: c}, 1000]
    expected = 1 + 2 + 3 + (10 + 1) + (2 + 100) + 3 + (1 + 3) + 1000
    assert summed(nested).get_result(timeout=20) == expected
    shaped = on(lambda value: (type(value).__name__, value))
    assert shaped((a, [b])).get_result(timeout=20) == ("tuple", (1, [2]))
    assert shaped({"x": [a, {"y": b}]}).get_result(timeout=20) == ("dict", {"x": [1, {"y": 2}]})
    assert shaped(Pair(a, [b])).get_result(timeout=20) == ("Pair", Pair(1, [2]))
    ordered = OrderedDict([("z", a), ("y", b)])
    assert shaped(ordered).get_result(timeout=20) == ("OrderedDict", OrderedDict(z=1, y=2))
    assert shaped(frozenset({a, c})).get_result(timeout=20) == ("frozenset", frozenset({1, 3}))


def test_a_chain_of_two_hundred_runs(on: Callable[..., Any]) -> None:
    step = on(inc)
    run = step(0)
    for _ in range(199):
        run = step(run)
    assert run.get_result(timeout=60) == 200


def test_wait_for_orders_without_passing_a_value(on: Callable[..., Any], tmp_path: Path) -> None:
    def write(path: str, text: str) -> str:
        with open(path, "a") as handle:
            handle.write(text)
        return text

    def read(path: str) -> str:
        return Path(path).read_text()

    log = str(tmp_path / "log")
    first = on(lambda: (time.sleep(0.2), write(log, "first "))[1])()
    second = on(write).submit(log, "second", wait_for=[first])
    assert second.get_result(timeout=20) == "second"
    assert on(read).submit(log, wait_for=[second]).get_result(timeout=20) == "first second"


def test_a_failed_input_skips_the_whole_subtree(on: Callable[..., Any]) -> None:
    root = on(fail)("broken")
    child = on(inc)(root)
    grandchild = on(add)(child, on(inc)(1))
    ordered = on(inc).submit(5, wait_for=[grandchild])
    for run in (child, grandchild, ordered):
        with pytest.raises(UpstreamFailedError) as raised:
            run.get_result(timeout=20)
        assert "'fail' failed: ValueError: broken" in str(raised.value)
        assert isinstance(raised.value.__cause__, ValueError)
        assert isinstance(raised.value, OpusError)
        assert run.status is TaskStatus.SKIPPED
    assert "its input 'fail' failed" in str(child.exception())
    assert "its input 'inc' did not run" in str(grandchild.exception())
    assert root.status is TaskStatus.FAILED


def test_stopping_an_input_skips_its_dependents(on: Callable[..., Any], runner: Runner) -> None:
    slow = on(nap)(3 if not runner.blocking else 0.01, 1)
    dependent = on(inc)(slow)
    slow.stop()
    if runner.blocking:  # sequential: the input had ended before the call returned
        assert slow.status is TaskStatus.SUCCEEDED
        assert dependent.get_result(timeout=20) == 2
        return
    with pytest.raises(UpstreamFailedError, match="'nap' was stopped"):
        dependent.get_result(timeout=20)
    assert (slow.status, dependent.status) == (TaskStatus.CANCELLED, TaskStatus.SKIPPED)


def test_a_timeout_in_the_middle_of_a_chain(on: Callable[..., Any], tmp_path: Path) -> None:
    woke = str(tmp_path / "woke")
    first = on(inc)(0)
    middle = on(lambda x: nap_and_mark(5, x, woke), timeout=0.3, name="middle")(first)
    last = on(inc)(middle)
    with pytest.raises(UpstreamFailedError, match="'middle' timed out"):
        last.get_result(timeout=20)
    assert not Path(woke).exists()  # skipped before the middle's five seconds were up
    assert first.get_result() == 1
    assert (middle.status, last.status) == (TaskStatus.TIMED_OUT, TaskStatus.SKIPPED)


def test_a_call_with_running_inputs_does_not_block_the_caller(
    on: Callable[..., Any], runner: Runner, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    if runner.blocking:  # sequential: the input runs within the call
        release.touch()
    slow = on(released)(str(release), 41)
    dependent = on(inc)(slow)  # returns while its input waits for this caller
    if not runner.blocking:
        assert not slow.done() and not dependent.done()
        release.touch()
    assert dependent.get_result(timeout=60) == 42


# -- map --------------------------------------------------------------------------------------


def test_a_map_of_many_elements(runner: Runner, on: Callable[..., Any]) -> None:
    # A thousand in a thread or a pool; on `process` each element is two forked processes
    # (the keeper and the task), so two hundred make the same point.
    count = 200 if isinstance(runner, ProcessRunner) else 1000
    runs = on(inc).map(range(count))
    assert isinstance(runs, RunList) and len(runs) == count
    assert runs.wait()  # no clock: a loaded machine is slow, not wrong (pytest-timeout guards)
    assert runs.done()
    assert runs.get_results() == list(range(1, count + 1))


def test_map_zips_takes_unmapped_and_resolves_runs(on: Callable[..., Any]) -> None:
    firsts = on(inc).map([0, 1, 2, 3])  # 1..4, runs as elements of the next map
    assert on(add).map(firsts, [10, 20, 30]).get_results(timeout=20) == [11, 22, 33]
    assert on(add).map([1, 2], unmapped(100)).get_results(timeout=20) == [101, 102]
    summed = on(total).map([1, 2], [[5, 5]] * 2)
    assert summed.get_results(timeout=20) == [11, 12]

    def scaled(x: int, factor: int = 1) -> int:
        return x * factor

    assert on(scaled).map([1, 2], factor=firsts[2]).get_results(timeout=20) == [3, 6]


def test_map_results_with_failures(on: Callable[..., Any]) -> None:
    def odd_fails(x: int) -> int:
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    runs = on(odd_fails).map(range(4))
    with pytest.raises(ValueError, match="odd 1"):
        runs.get_results(timeout=20)
    results = runs.get_results(raise_exceptions=False)
    assert results[0] == 0 and results[2] == 2
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3"]
    downstream = on(inc).map(runs)
    assert [r.status for r in downstream] == [TaskStatus.SKIPPED, TaskStatus.SKIPPED] * 2 or [
        r.wait(20) and r.status for r in downstream
    ] == [TaskStatus.SUCCEEDED, TaskStatus.SKIPPED] * 2


def test_map_refuses_what_it_cannot_map(on: Callable[..., Any]) -> None:
    mapped = on(inc)
    with pytest.raises(TypeError, match=r"argument 1 is int.*unmapped"):
        mapped.map(5)
    with pytest.raises(TypeError, match=r"argument 1 is str"):
        mapped.map("abc")
    with pytest.raises(TypeError, match="a task run"):
        mapped.map(mapped(1))
    with pytest.raises(TypeError, match="at least one"):
        mapped.map()
    with pytest.raises(TypeError, match="not in unmapped"):
        mapped.map(unmapped([1]))


# -- waiting on many --------------------------------------------------------------------------


def test_wait_and_as_completed(on: Callable[..., Any], runner: Runner) -> None:
    fast, slow = on(nap)(0.01, 1), on(nap)(0.2 if runner.blocking else 1.0, 2)
    done, not_done = wait([fast, slow], return_when=FIRST_COMPLETED)
    assert fast in done
    if not runner.blocking:
        assert not_done == {slow}
    order = list(as_completed([slow, fast], timeout=20))
    assert set(order) == {fast, slow} and len(order) == 2
    if not runner.blocking:
        assert order[-1] is slow
    done, not_done = wait([fast, slow], timeout=20)
    assert done == {fast, slow} and not not_done


def test_wait_first_exception_and_timeouts(on: Callable[..., Any], runner: Runner) -> None:
    broken = on(fail)("no")
    slow = on(nap)(0.01 if runner.blocking else 2, 0)
    done, not_done = wait([slow, broken], timeout=20, return_when=FIRST_EXCEPTION)
    assert broken in done
    if not runner.blocking:
        assert slow in not_done
        assert wait([slow], timeout=0.05).not_done == {slow}
        with pytest.raises(TimeoutError, match="1 of 1 runs"):
            list(as_completed([slow], timeout=0.05))
        slow.stop()
    with pytest.raises(ValueError, match="return_when"):
        wait([broken], return_when="SOMETIMES")


# -- async --------------------------------------------------------------------------------------


def test_async_tasks_mix_with_sync_ones(on: Callable[..., Any]) -> None:
    a = on(inc)(0)  # sync: 1
    b = on(ainc)(a)  # async fed by sync: 2
    c = on(inc)(b)  # sync fed by async: 3
    d = on(ainc).map([a, b, c])  # 2, 3, 4
    assert c.get_result(timeout=20) == 3
    assert d.get_results(timeout=20) == [2, 3, 4]

    async def main() -> list[int]:
        return [await c, *[await run for run in d]]

    assert asyncio.run(main()) == [3, 2, 3, 4]


def test_an_async_timeout_cancels_the_coroutine_and_retries_apply(
    on: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"

    async def sleepy() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            marker.write_text("yes")
            raise

    run = on(sleepy, timeout=0.3)()
    assert not run.wait(0.1) or run.status is TaskStatus.TIMED_OUT
    run.wait(10)
    assert run.status is TaskStatus.TIMED_OUT
    assert until(marker.exists)  # cancelled, not left to sleep its five seconds
    assert marker.read_text() == "yes"

    attempts = tmp_path / "attempts"

    async def flaky() -> int:
        count = len(attempts.read_text()) if attempts.exists() else 0
        attempts.write_text("x" * (count + 1))
        if count < 2:
            raise RuntimeError(f"attempt {count + 1}")
        return count + 1

    retried = on(flaky, retries=2)()
    assert retried.get_result(timeout=20) == 3
    assert retried.attempts == 3


def test_awaiting_a_run_does_not_block_the_event_loop(runner: Runner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    if runner.blocking:  # sequential: the run ends within the call
        release.touch()
    slow = task(runner=runner)(released)(str(release), 7)

    async def main() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while not slow.done():
                ticks += 1
                if ticks == 10:  # the run ends only once the loop has gone on while awaiting it
                    release.touch()
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        value = await slow
        await ticker
        return value, ticks

    value, ticks = asyncio.run(main())
    assert value == 7
    if not runner.blocking:
        assert ticks >= 10  # the loop went on while the run ran


# -- only where threads or processes share this process -------------------------------------


def test_a_waiting_dependent_holds_no_worker() -> None:
    runner = ThreadPoolRunner(max_workers=1)
    try:
        gate = threading.Event()
        first = task(runner=runner)(lambda: gate.wait(5) and 1)()
        dependents = [task(runner=runner)(inc)(first) for _ in range(20)]
        gate.set()
        assert [d.get_result(timeout=10) for d in dependents] == [2] * 20
    finally:
        runner.shutdown()


def test_a_failure_skips_a_chain_of_twenty_thousand_without_recursion() -> None:
    runner = ThreadPoolRunner(max_workers=2)
    try:
        gate = threading.Event()

        def opens_then_fails() -> int:
            gate.wait(5)
            raise ValueError("root")

        run = task(runner=runner)(opens_then_fails)()
        step = task(runner=runner)(inc)
        for _ in range(20_000):
            run = step(run)
        gate.set()
        with pytest.raises(UpstreamFailedError, match="'opens_then_fails' failed"):
            run.get_result(timeout=30)
    finally:
        runner.shutdown()


def test_sequential_runs_a_dependent_of_a_running_input_in_the_caller() -> None:
    pool = ThreadPoolRunner(max_workers=2)
    try:
        slow = task(runner=pool)(nap)(0.2, 1)
        here = task(runner="sequential")(lambda x: (x, os.getpid(), threading.get_ident()))(slow)
        assert here.done()
        assert here.get_result() == (1, os.getpid(), threading.get_ident())
    finally:
        pool.shutdown()


# -- hostile arguments ------------------------------------------------------------------------


def test_shared_and_self_holding_containers_are_rebuilt_once(on: Callable[..., Any]) -> None:
    done = on(inc)(0)
    done.wait(20)
    shared: Any = [done]
    levels = 40
    for _ in range(levels):  # 2**40 paths through 40 containers: each is rebuilt once
        shared = [shared, shared]

    def depth_and_sharing(value: Any) -> tuple[int, bool]:
        depth, shared = 0, True
        while isinstance(value, list) and len(value) == 2:
            shared = shared and value[0] is value[1]
            value, depth = value[0], depth + 1
        return depth, shared and value == [1]

    assert on(depth_and_sharing)(shared).get_result(timeout=20) == (levels, True)

    looped: Any = {"run": done}
    looped["self"] = looped

    def keeps_its_loop(value: dict[str, Any]) -> tuple[bool, int]:
        return value["self"] is value, value["run"]

    assert on(keeps_its_loop)(looped).get_result(timeout=20) == (True, 1)


def test_a_runlist_arrives_as_a_list_and_dict_subclasses_keep_their_kind(
    on: Callable[..., Any],
) -> None:
    rows = on(inc).map([1, 2, 3])
    described = on(lambda v: (type(v).__name__, v))
    assert described(rows).get_result(timeout=20) == ("list", [2, 3, 4])
    counted = described(Counter({"a": rows[0]}))
    assert counted.get_result(timeout=20) == ("Counter", Counter({"a": 2}))
    defaulted = on(lambda v: (type(v).__name__, v["a"], v["missing"]))
    assert defaulted(defaultdict(int, a=rows[1])).get_result(timeout=20) == ("defaultdict", 3, 0)


def test_runs_deep_in_containers_are_found_or_refused(on: Callable[..., Any]) -> None:
    def nest(value: Any, levels: int) -> Any:
        for _ in range(levels):
            value = [value]
        return value

    def unwrap(value: Any) -> Any:
        while isinstance(value, list):
            value = value[0]
        return value

    slow = on(nap)(0.1, 7)
    assert on(unwrap)(nest(slow, 150)).get_result(timeout=20) == 7
    with pytest.raises(TypeError, match="nested more than 200 containers deep"):
        on(unwrap)(nest(slow, 250)).get_result(timeout=20)


def test_map_stops_at_the_shortest_even_when_one_is_endless(on: Callable[..., Any]) -> None:
    assert on(add).map([1, 2, 3], itertools.count(10)).get_results(timeout=20) == [11, 13, 15]
    assert on(add).map((x for x in range(2)), [5, 5, 5]).get_results(timeout=20) == [5, 6]
    assert on(add).map([], [1]).get_results() == []


def test_an_async_task_that_will_not_stop_is_stopped_after_its_grace(
    on: Callable[..., Any], tmp_path: Path
) -> None:
    finished = tmp_path / "finished"

    async def stubborn() -> str:
        time.sleep(5)  # blocks its loop: cancelling cannot reach it
        finished.touch()
        return "finished"

    run = on(stubborn, timeout=0.3)()
    run.wait(10)
    assert run.status is TaskStatus.TIMED_OUT
    assert str(run.exception()) == "task 'stubborn' timed out after 0.3s"
    assert not finished.exists()  # given up on after the grace, not waited for


def test_tasks_that_wait_for_tasks_never_starve_the_pool() -> None:
    runner = ThreadPoolRunner(max_workers=2)
    try:
        inner = task(runner=runner)(lambda x: x * 2)

        def calls_and_waits(x: int) -> int:
            first = inner(x).get_result()
            done, _ = wait([inner(x), inner(x + 1)])
            return first + sum(run.get_result() for run in done)

        outer = task(runner=runner)(calls_and_waits)
        expected = [2 * x + 2 * x + 2 * (x + 1) for x in range(40)]
        assert outer.map(range(40)).get_results(timeout=20) == expected
        assert [outer(x).get_result(timeout=20) for x in range(3)] == expected[:3]
    finally:
        runner.shutdown()


@pytest.mark.slow
def test_a_runlist_fetches_remote_values_only_when_asked(dask_runner: DaskRunner) -> None:
    runs = RunList([task(runner=dask_runner)(inc)(i) for i in range(50)])
    assert runs.wait(20)
    assert not any(run._fetched for run in runs)  # type: ignore[attr-defined]
    assert runs.get_results() == list(range(1, 51))  # all of them in one Client.gather
    assert all(run._fetched for run in runs)  # type: ignore[attr-defined]
