"""Resources and priorities: a task starts only when what it needs is free, on every
runner; the highest priority starts first; nothing waits for ever.

The fuzz runs seeded random graphs (needs, capacities, priorities, durations, failures)
on real runners, each task writing when it starts and ends (the system's monotonic
clock, the same in every process); the log is then checked from scratch: at no moment
is a resource over capacity, every dependency ended before its dependent started, and
every task that could run did.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opus_core import ManifestError, Task, TaskProcessor, Tasks
from opus_core.errors import ConfigError
from opus_core.resources import PATIENCE
from opus_core.runners import ProcessPoolRunner
from opus_core.testing.cli import run_opus

GRAPHS_PER_RUNNER = 75  # 300 graphs in all
RUNNERS = ["sequential", "threadpool", "process", "processpool"]


class Busy(TaskProcessor):
    """Writes `start NAME NS` and `end NAME NS` to spec.log around a short sleep; fails
    when spec.fail says so."""

    kind = "Busy"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        spec = task.spec
        fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"start {task.task_id} {time.monotonic_ns()}\n".encode())
            time.sleep(spec["seconds"])
            os.write(fd, f"end {task.task_id} {time.monotonic_ns()}\n".encode())
        finally:
            os.close(fd)
        if spec["fail"]:
            raise RuntimeError("planned failure")
        return {}


def graph(rng: random.Random, log: Path) -> tuple[list[Task], dict[str, float]]:
    capacities = {name: float(rng.randint(1, 3)) for name in rng.sample(["db", "gpu", "net"], 2)}
    if rng.random() < 0.5:
        capacities["cpu"] = float(rng.randint(1, 3))
    tasks = []
    for i in range(rng.randint(4, 14)):
        earlier = [f"t{j}" for j in range(i)]
        needs = {
            name: float(rng.randint(1, int(capacity)))
            for name, capacity in capacities.items()
            if rng.random() < 0.5
        }
        metadata: dict[str, Any] = {
            "name": f"t{i}",
            "dependencies": rng.sample(earlier, min(len(earlier), rng.randint(0, 2))),
            "resources": needs,
            "priority": rng.randint(-2, 2),
        }
        spec = {
            "log": str(log),
            "seconds": rng.choice([0, 0.001, 0.003, 0.006]),
            "fail": rng.random() < 0.08,
        }
        tasks.append(Task("Busy", "v1", metadata=metadata, spec=spec))
    return tasks, capacities


def check_log(log: Path, tasks: list[Task], capacities: dict[str, float], report: Any) -> int:
    """Check the run's log; how many starts it holds."""
    needs = {}
    for task in tasks:
        wanted = dict(task.meta.resources)
        if "cpu" in capacities:
            wanted.setdefault("cpu", 1.0)
        needs[task.task_id] = wanted
    events = []
    for line in log.read_text().splitlines():
        what, name, at = line.split()
        events.append((int(at), 0 if what == "end" else 1, what, name))
    events.sort()  # at one instant, ends before starts
    held = dict.fromkeys(capacities, 0.0)
    started: dict[str, int] = {}
    ended: dict[str, int] = {}
    for at, _, what, name in events:
        for resource, need in needs[name].items():
            held[resource] += need if what == "start" else -need
            assert held[resource] <= capacities[resource] + 1e-9, (resource, name, held)
        (started if what == "start" else ended)[name] = at
    by_name = {task.task_id: task for task in tasks}
    for name, at in started.items():
        for dep in by_name[name].meta.dependency_names:
            assert dep in ended and ended[dep] <= at, (name, dep)
    # Every task runs unless something it depends on failed or was skipped.
    for task in tasks:
        status = report[task.task_id].status.value
        blocked = any(report[d].status.value != "succeeded" for d in task.meta.dependency_names)
        if blocked:
            assert status == "skipped", (task.task_id, status)
        else:
            assert task.task_id in started and task.task_id in ended, task.task_id
            assert status == ("failed" if task.spec["fail"] else "succeeded")
    return len(started)


@pytest.mark.slow
@pytest.mark.parametrize("runner", RUNNERS)
def test_random_graphs_never_hold_more_than_the_capacity(tmp_path: Path, runner: str) -> None:
    rng = random.Random(f"resources-{runner}")
    pool = ProcessPoolRunner(max_workers=3) if runner == "processpool" else None
    starts = 0
    for number in range(GRAPHS_PER_RUNNER):
        log = tmp_path / f"log-{number}"
        tasks, capacities = graph(rng, log)
        if pool is not None:
            engine = Tasks(runner=pool, resources=capacities)
        else:
            options = {} if runner == "sequential" else {"max_workers": 4}
            engine = Tasks(runner=runner, resources=capacities, runner_options=options)
        engine.register_task_processor(Busy())
        for task in tasks:
            engine.add_task(task)
        report = engine.process_context()
        starts += check_log(log, tasks, capacities, report)
    if pool is not None:
        pool.shutdown()
    assert starts > GRAPHS_PER_RUNNER * 4


class Order(TaskProcessor):
    kind = "Order"
    seen: list[str] = []

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        Order.seen.append(task.task_id)
        return {}


def run_in_order(tasks: list[Task], resources: dict[str, float] | None = None) -> list[str]:
    Order.seen = []
    engine = Tasks(runner="sequential", resources=resources)
    engine.register_task_processor(Order())
    for task in tasks:
        engine.add_task(task)
    assert engine.process_context().ok
    return Order.seen


def order(name: str, **metadata: Any) -> Task:
    return Task("Order", "v1", metadata={"name": name, **metadata})


def test_higher_priority_starts_first_then_the_longer_chain_then_the_first_ready() -> None:
    tasks = [
        order("low", priority=-1),
        order("plain"),
        order("head"),
        order("tail", dependencies=["head"]),
        order("urgent", priority=5),
    ]
    assert run_in_order(tasks) == ["urgent", "head", "plain", "tail", "low"]


def test_among_equals_the_task_that_needs_the_larger_share_of_the_capacities_starts_first() -> None:
    tasks = [
        order("small", resources={"db": 1}),
        order("none"),
        order("both", resources={"db": 1, "gpu": 1}),  # 1/2 + 1/4
        order("large", resources={"db": 2}),  # 2/2
    ]
    assert run_in_order(tasks, {"db": 2, "gpu": 4}) == ["large", "both", "small", "none"]


def test_a_low_priority_task_behind_a_stream_of_higher_ones_still_starts() -> None:
    # Each high task, as it ends, makes the next one ready: a stream that never dries up
    # until the chain ends. The low one, ready from the start, is passed over PATIENCE
    # (64) times, then starts.
    chain = [order("h0", priority=9)]
    chain += [
        order(f"h{i}", priority=9, dependencies=[f"h{i - 1}"]) for i in range(1, PATIENCE + 24)
    ]
    seen = run_in_order([order("low", priority=-9), *chain])
    assert seen.index("low") == PATIENCE == 64


def test_without_resources_or_priorities_tasks_start_in_the_order_they_became_ready() -> None:
    tasks = [order(f"t{i}") for i in range(5)]
    assert run_in_order(tasks) == ["t0", "t1", "t2", "t3", "t4"]


def test_a_need_above_its_capacity_or_of_an_unknown_resource_fails_before_anything_runs() -> None:
    with pytest.raises(ManifestError) as too_much:
        run_in_order([order("a"), order("load", resources={"db": 3})], {"db": 2})
    assert str(too_much.value) == (
        "task 'load' needs 3 of resource 'db', whose capacity is 2 ([resources] db in "
        "opus.toml): it could never start"
    )
    assert Order.seen == []
    with pytest.raises(ManifestError) as unknown:
        run_in_order([order("load", resources={"dbs": 1})], {"db": 2})
    assert str(unknown.value) == (
        "task 'load' needs resource 'dbs', which [resources] of opus.toml does not declare "
        "(did you mean 'db'?); declared: db"
    )


def test_cpu_needs_are_not_limited_until_cpu_has_a_capacity() -> None:
    assert run_in_order([order("big", resources={"cpu": 64})]) == ["big"]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"resources": {"db": -1}}, "metadata.resources.db must be 0 or more, got -1"),
        ({"resources": {"db": float("nan")}}, "metadata.resources.db must be 0 or more, got nan"),
        ({"resources": ["db"]}, "metadata.resources must be a table of resource names"),
        ({"priority": 1.5}, "metadata.priority must be a whole number, got 1.5"),
        ({"priority": True}, "metadata.priority must be a whole number, got True"),
    ],
)
def test_needs_and_priorities_are_checked_when_the_task_is_made(
    metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestError) as raised:
        order("t", **metadata)
    assert str(raised.value).startswith(f"task 't': {message}")


def test_capacities_in_opus_toml_are_checked_and_used(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text(
        '[opus]\npersistence = "memory"\n[resources]\ndb = 0\n'
        '[[tasks]]\nkind = "Command"\nversion = "v1"\nmetadata = { name = "a" }\n'
        'spec = { run = "true" }\n'
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPUS_")},
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
    }
    bad = run_opus(["run"], cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert bad.stderr == (
        f"opus: error: {tmp_path / 'opus.toml'}: resources.db must be a number above 0, "
        "got 0 (a resource's capacity)\n"
    )
    (tmp_path / "opus.toml").write_text(
        (tmp_path / "opus.toml")
        .read_text()
        .replace("db = 0", "db = 1")
        .replace('name = "a"', 'name = "a", resources = { db = 2 }')
    )
    over = run_opus(["run"], cwd=tmp_path, env=env)
    assert over.returncode == 2
    assert "task 'a' needs 2 of resource 'db', whose capacity is 1" in over.stderr
    assert Tasks.from_config(tmp_path / "opus.toml").resources == {"db": 1}
    with pytest.raises(ConfigError):
        (tmp_path / "opus.toml").write_text("[resources]\ndb = true\n")
        Tasks.from_config(tmp_path / "opus.toml")


def test_opus_tasks_json_lists_each_task_s_needs_and_priority(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text(
        '[opus]\npersistence = "memory"\n[resources]\ndb = 2\n'
        '[[tasks]]\nkind = "Command"\nversion = "v1"\n'
        'metadata = { name = "load", resources = { db = 1 }, priority = 3 }\n'
        'spec = { run = "true" }\n'
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPUS_")},
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
    }
    listed = run_opus(["tasks", "--json"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    (load,) = json.loads(listed.stdout)
    assert load["resources"] == {"db": 1.0} and load["priority"] == 3


class Peek(TaskProcessor):
    """Notes, as it runs, how many ready tasks wait for a resource."""

    kind = "Peek"
    engine: Tasks | None = None
    seen: list[int] = []

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        assert Peek.engine is not None
        Peek.seen.append(Peek.engine.waiting())
        return {}


def test_the_progress_line_counts_the_tasks_waiting_for_a_resource() -> None:
    from opus_core.cli.progress import Progress

    engine = Peek.engine = Tasks(runner="sequential", resources={"db": 1})
    Peek.seen = []
    engine.register_task_processor(Peek())
    for name in ("a", "b", "c"):
        engine.add_task(Task("Peek", "v1", metadata={"name": name, "resources": {"db": 1}}))
    engine.add_task(Task("Peek", "v1", metadata={"name": "free"}))
    assert engine.process_context().ok
    # While the first runs, the two others that need db wait; "free" needs nothing.
    assert Peek.seen[0] == 2 and Peek.seen[-1] == 0
    assert engine.waiting() == 0  # between runs
    progress = Progress(running=lambda: 1, waiting=lambda: 2)
    assert progress._line() == "[0/0] running 1, waiting for resources 2, failed 0"
    assert Progress(running=lambda: 1)._line() == "[0/0] running 1, failed 0"


# -- function tasks ------------------------------------------------------------------------


@pytest.fixture
def capacities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder, current, whose opus.toml declares db = 1 and gpu = 2."""
    from opus_core.testing import reset_caches

    (tmp_path / "opus.toml").write_text("[resources]\ndb = 1\ngpu = 2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPUS_CONFIG", raising=False)
    reset_caches()
    yield tmp_path
    reset_caches()


def busy(log: str, name: str, seconds: float) -> str:
    """Log when it starts and ends (the monotonic clock, the same in every process)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"start {name} {time.monotonic_ns()}\n".encode())
        time.sleep(seconds)
        os.write(fd, f"end {name} {time.monotonic_ns()}\n".encode())
    finally:
        os.close(fd)
    return name


def most_at_once(log: Path, names: set[str]) -> int:
    events = sorted(
        (int(at), 0 if what == "end" else 1)
        for what, name, at in (line.split() for line in log.read_text().splitlines())
        if name in names
    )
    now = peak = 0
    for _, starting in events:
        now += 1 if starting else -1
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("runner", ["threadpool", "process"])
def test_function_calls_that_need_a_resource_never_hold_more_than_its_capacity(
    capacities: Path, runner: str
) -> None:
    from opus_core import task

    log = capacities / "log"
    with_db = task(resources={"db": 1}, runner=runner)(busy)
    free = task(runner=runner)(busy)
    runs = [with_db(str(log), f"db{i}", 0.01) for i in range(6)]
    runs += [free(str(log), f"free{i}", 0.01) for i in range(4)]
    assert sorted(r.get_result(timeout=60) for r in runs) == sorted(
        [f"db{i}" for i in range(6)] + [f"free{i}" for i in range(4)]
    )
    assert most_at_once(log, {f"db{i}" for i in range(6)}) == 1
    assert most_at_once(log, {f"free{i}" for i in range(4)}) >= 1


def test_calls_waiting_for_a_resource_start_by_priority_and_failures_give_it_back(
    capacities: Path,
) -> None:
    from opus_core import task

    release = threading.Event()
    order: list[str] = []

    @task(resources={"db": 1}, runner="threadpool")
    def hold() -> None:
        release.wait(60)
        raise RuntimeError("the holder fails, and gives db back all the same")

    @task(resources={"db": 1}, runner="threadpool")
    def step(name: str) -> str:
        order.append(name)
        return name

    holder = hold()
    low = step("low")
    high = step.submit("high", resources={"db": 1, "gpu": 2})
    urgent = task(resources={"db": 1}, priority=5, runner="threadpool")(step.fn)("urgent")
    assert low.status is None and high.status is None and urgent.status is None
    release.set()
    assert [r.get_result(timeout=60) for r in (urgent, low, high)] == ["urgent", "low", "high"]
    assert order == ["urgent", "low", "high"]
    assert holder.wait(60) and holder.status is not None and holder.status.value == "failed"


def test_a_function_call_that_needs_too_much_or_an_unknown_resource_is_an_error_at_once(
    capacities: Path,
) -> None:
    from opus_core import task

    @task(resources={"db": 2}, runner="sequential")
    def greedy() -> None:
        return None

    with pytest.raises(ValueError) as too_much:
        greedy()
    assert str(too_much.value) == (
        "task 'greedy' needs 2 of resource 'db', whose capacity is 1 ([resources] db in opus.toml)"
    )
    with pytest.raises(ValueError) as unknown:
        greedy.submit(resources={"gpus": 1})
    assert "needs resource 'gpus', which [resources] of opus.toml does not declare" in str(
        unknown.value
    )
    assert "(did you mean 'gpu'?)" in str(unknown.value)
    with pytest.raises(ValueError, match=r"@task resources\.db must be 0 or more, got -1"):
        task(resources={"db": -1})(busy)
    with pytest.raises(ValueError, match="@task priority must be a whole number, got 'high'"):
        task(priority="high")(busy)  # type: ignore[arg-type]


def test_fractional_needs_add_up_to_their_capacity() -> None:
    from opus_core.resources import ResourcePool

    pool = ResourcePool({"bw": 0.3})
    for _ in range(3):
        assert pool.fits((("bw", 0.1),))
        pool.take((("bw", 0.1),))
    assert not pool.fits((("bw", 0.1),))


def holding_db(release: threading.Event) -> Any:
    """A threadpool call that holds all of db (capacity 1) until `release` is set."""
    from opus_core import task

    @task(resources={"db": 1}, runner="threadpool")
    def hold() -> None:
        release.wait(60)

    return hold()


def test_hundreds_of_calls_waiting_on_sequential_all_run_when_the_holder_ends(
    capacities: Path,
) -> None:
    from opus_core import task
    from opus_core.functions.gate import configured_gate

    release = threading.Event()

    @task(resources={"db": 1}, runner="sequential")
    def job(i: int) -> int:
        return i

    holder = holding_db(release)
    runs = [job(i) for i in range(400)]  # all wait for db
    assert all(run.status is None for run in runs)
    release.set()
    assert holder.wait(60)
    assert [run.get_result(timeout=60) for run in runs] == list(range(400))
    assert configured_gate().waiting() == 0 and job(400).get_result() == 400


def test_a_call_stopped_while_it_waits_never_runs(capacities: Path) -> None:
    from opus_core import task

    release = threading.Event()
    ran: list[str] = []

    @task(resources={"db": 1}, runner="threadpool")
    def step(name: str) -> str:
        ran.append(name)
        return name

    holder = holding_db(release)
    waiting = step("stopped")
    waiting.stop()
    assert waiting.status is not None and waiting.status.value == "cancelled"
    after = step("after")
    release.set()
    assert holder.wait(60) and after.get_result(timeout=60) == "after"
    assert ran == ["after"]


def test_a_call_whose_needs_are_free_does_not_wait_behind_one_whose_are_not(
    capacities: Path,
) -> None:
    from opus_core import task

    release = threading.Event()

    @task(runner="threadpool")
    def step(name: str) -> str:
        return name

    holder = holding_db(release)
    blocked = step.submit("db", resources={"db": 1})
    free = step.submit("gpu", resources={"gpu": 1})
    assert free.get_result(timeout=60) == "gpu"  # while db is still held
    assert blocked.status is None
    release.set()
    assert holder.wait(60) and blocked.get_result(timeout=60) == "db"
