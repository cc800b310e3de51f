"""Function tasks that feed each other on dask: runs travel as Dask futures, so values move
from worker to worker and never through the driver; `map` is one `client.map`.

Task functions are defined inside the tests: cloudpickle sends them by value (this module
cannot be imported on the workers)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin
from opus_plugin_dask import DaskRunner, DaskTaskRun

from opus_core import RunList, Task, TaskProcessor, Tasks, UpstreamFailedError, task, unmapped, wait

pytestmark = pytest.mark.slow  # a real dask cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

DRIVER = os.getpid()


def _arrive(payload: Any) -> WorkerOnly:
    """Unpickling a `WorkerOnly`: anywhere but in the driver's process."""
    if os.getpid() == DRIVER:
        raise RuntimeError(f"a value held on the cluster reached the driver: {payload!r}")
    return WorkerOnly(payload)


class WorkerOnly:
    """A value that can live on the workers and move between them, never to the driver."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        return (_arrive, (self.payload,))


class GraphSpy(SchedulerPlugin):
    """A scheduler plugin counting the graphs clients send: one per submit or map call."""

    def __init__(self) -> None:
        self.graphs: list[list[str]] = []

    def update_graph(self, scheduler: Any, *, keys: Any, **kwargs: Any) -> None:
        self.graphs.append(sorted(str(key) for key in keys))

    def graphs_of(self, prefix: str) -> list[list[str]]:
        return [g for g in self.graphs if any(k.startswith(prefix + "-") for k in g)]


@pytest.fixture(scope="module")
def runner() -> Iterator[DaskRunner]:
    runner = DaskRunner(n_workers=2, threads_per_worker=2, processes=True)
    runner.start()
    yield runner
    runner.shutdown()


@pytest.fixture
def spy(runner: DaskRunner) -> Iterator[GraphSpy]:
    runner.client.register_plugin(GraphSpy(), name="graph-spy")
    assert runner.cluster is not None  # a LocalCluster's scheduler lives in this process
    yield runner.cluster.scheduler.plugins["graph-spy"]
    runner.client.unregister_scheduler_plugin("graph-spy")


def test_a_diamond_moves_its_values_from_worker_to_worker(runner: DaskRunner) -> None:
    @task(runner=runner)
    def source(n: int) -> WorkerOnly:
        return WorkerOnly(n)

    @task(runner=runner)
    def double(value: WorkerOnly) -> WorkerOnly:
        return WorkerOnly(value.payload * 2)

    @task(runner=runner)
    def square(value: WorkerOnly) -> WorkerOnly:
        return WorkerOnly(value.payload**2)

    @task(runner=runner)
    def join(parts: dict[str, list[WorkerOnly]]) -> tuple[int, int]:
        return parts["left"][0].payload + parts["right"][0].payload, os.getpid()

    top = source(3)
    left, right = double(top), square(top)
    bottom = join({"left": [left], "right": [right]})  # runs nested in containers
    total, pid = bottom.get_result(timeout=30)
    assert total == 6 + 9 and pid != DRIVER
    assert all(r.status == "succeeded" for r in (top, left, right, bottom))
    assert set(bottom.inputs) == {left, right}
    # The middle values exist, on the cluster only: fetching one is what would bring it here.
    with pytest.raises(RuntimeError, match="reached the driver"):
        left.get_result(timeout=30)


def test_map_is_one_client_map(runner: DaskRunner, spy: GraphSpy) -> None:
    @task(runner=runner)
    def inc(x: int, step: int = 1) -> int:
        return x + step

    @task(runner=runner)
    def scale(x: int, factor: int) -> int:
        return x * factor

    firsts = inc.map(range(200), step=2)
    assert isinstance(firsts, RunList) and all(isinstance(r, DaskTaskRun) for r in firsts)
    seconds = scale.map(firsts, unmapped(10))  # runs as elements: futures in the map
    assert seconds.get_results(timeout=30) == [(x + 2) * 10 for x in range(200)]
    assert [len(g) for g in spy.graphs_of("inc")] == [200]
    assert [len(g) for g in spy.graphs_of("scale")] == [200]


def test_a_failed_input_skips_the_whole_subtree(runner: DaskRunner) -> None:
    @task(runner=runner)
    def load() -> int:
        raise ValueError("no rows")

    @task(runner=runner)
    def fine() -> int:
        return 1

    @task(runner=runner)
    def add(*values: int) -> int:
        return sum(values)

    bad, ok = load(), fine()
    child = add(bad, ok)
    grandchildren = [add(child, ok), add([child])]
    leaf = add(*grandchildren)
    sibling = add(ok, 1)

    with pytest.raises(UpstreamFailedError) as caught:
        leaf.get_result(timeout=30)
    assert caught.value.task_name == "add" and isinstance(caught.value.__cause__, ValueError)
    assert "'load' failed: ValueError: no rows" in str(caught.value)
    assert bad.status == "failed"
    assert [r.status for r in (child, *grandchildren, leaf)] == ["skipped"] * 4
    error = child.get_result(raise_exceptions=False)
    assert isinstance(error, UpstreamFailedError) and error.input_name == "load"
    assert sibling.get_result(timeout=30) == 2


def test_stopping_an_input_skips_its_dependents(runner: DaskRunner) -> None:
    @task(runner=runner)
    def slow() -> int:
        time.sleep(1)
        return 1

    @task(runner=runner)
    def inc(x: int) -> int:
        return x + 1

    first = slow()
    second = inc(first)
    third = inc(second)
    first.stop()
    assert first.status == "cancelled"
    with pytest.raises(UpstreamFailedError, match="'slow' was stopped"):
        third.get_result(timeout=30)
    assert second.status == "skipped" and third.status == "skipped"
    assert second.future is not None and second.future.status == "cancelled"  # Dask's own


def test_a_timeout_in_the_middle_of_a_chain(runner: DaskRunner) -> None:
    @task(runner=runner)
    def inc(x: int) -> int:
        return x + 1

    @task(runner=runner, timeout=0.3)
    def stuck(x: int) -> int:
        time.sleep(1.5)
        return x

    start = inc(1)
    middle = stuck(start)
    end = inc(inc(middle))
    with pytest.raises(UpstreamFailedError, match="'stuck' timed out"):
        end.get_result(timeout=30)
    assert start.get_result() == 2
    assert (start.status, middle.status, end.status) == ("succeeded", "timed_out", "skipped")


def test_async_tasks_and_retries_feed_plain_ones(runner: DaskRunner, tmp_path: Any) -> None:
    marker = tmp_path / "failed-once"

    @task(runner=runner)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.05)
        return x * 10

    @task(runner=runner, retries=1)
    def flaky(x: int) -> int:
        if not marker.exists():
            marker.touch()
            raise ConnectionError("first attempt")
        return x + 1

    @task(runner=runner)
    def pair(a: int, b: int) -> tuple[int, int]:
        return a, b

    fetched = fetch(2)
    rescued = flaky(fetched)  # an async task's value, unwrapped on the cluster
    both = pair(rescued, fetch(rescued))
    assert both.get_result(timeout=30) == (21, 210)
    assert rescued.attempts == 2 and fetched.attempts == 1
    assert wait([fetched, rescued, both], timeout=5).not_done == set()

    async def main() -> int:
        return await fetch(await rescued)  # type: ignore[no-any-return]

    assert asyncio.run(main()) == 210


def test_a_value_is_fetched_once_and_only_when_asked(runner: DaskRunner) -> None:
    @task(runner=runner)
    def make(n: int) -> list[int]:
        time.sleep(0.3)
        return list(range(n))

    run = make(5)
    with pytest.raises(TimeoutError):
        run.get_result(timeout=0.01)
    assert run.wait(30) and run.outcome()[1] is None and not run._fetched  # ended; value remote
    assert run.get_result() == [0, 1, 2, 3, 4]
    assert run.get_result() is run.get_result()  # fetched once
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(run.get_result())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[0, 1, 2, 3, 4]] * 3


def test_keywords_dask_keeps_for_itself_reach_the_task(runner: DaskRunner) -> None:
    @task(runner=runner)
    def configure(x: int, key: str = "", retries: int = 0, priority: int = 0) -> str:
        return f"{x}:{key}:{retries}:{priority}"

    assert configure(1, key="k", retries=3, priority=9).get_result(timeout=30) == "1:k:3:9"
    runs = configure.map([1, 2], key="m", retries=unmapped(4))
    assert runs.get_results(timeout=30) == ["1:m:4:0", "2:m:4:0"]


class Publishes(TaskProcessor):
    """Publishes a value the driver cannot take for the task named "unfetchable"."""

    kind = "Publishes"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        name = task.task_id
        return {name: WorkerOnly(name) if name == "unfetchable" else name}


def test_a_value_the_driver_cannot_take_fails_only_its_task(runner: DaskRunner) -> None:
    for _ in range(2):  # and the runner still finishes what comes after
        tasks = Tasks(runner=runner)
        tasks.register_task_processor(Publishes())
        for name in ("plain-1", "unfetchable", "plain-2"):
            tasks.add_task(Task("Publishes", "v1", metadata={"name": name}))
        report = tasks.process_context()
        assert report["plain-1"].status == report["plain-2"].status == "succeeded"
        assert report["unfetchable"].status == "failed"
        assert "reached the driver" in str(report["unfetchable"].error)
