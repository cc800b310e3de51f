"""The dask runner on a real LocalCluster with worker processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from cli_helpers import opus
from harness import Harness, until
from opus_plugin_dask import DaskConnectionError, DaskRunner, DaskTaskRun

from opus_core import ConfigError, StatePersistence, Task, TaskProcessor, Tasks, task
from opus_core.plugin.manager import PluginManager

pytestmark = pytest.mark.slow  # a real dask cluster

# Functions defined here travel to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def runner() -> Iterator[DaskRunner]:
    runner = DaskRunner(n_workers=2, threads_per_worker=2, processes=True)
    runner.start()
    yield runner
    runner.shutdown()


def test_registered_through_its_entry_point() -> None:
    assert PluginManager().runners()["dask"] is DaskRunner


def test_a_real_cluster_with_two_worker_processes(runner: DaskRunner) -> None:
    workers = runner.client.scheduler_info()["workers"]
    assert len(workers) == 2
    pids = set(runner.client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def test_task_calls_run_on_the_workers_in_parallel(runner: DaskRunner, tmp_path: Path) -> None:
    @task(runner=runner)
    def work(n: int) -> tuple[int, int]:
        (tmp_path / f"started-{n}").touch()
        all_started = until(lambda: len(list(tmp_path.glob("started-*"))) == 4)
        return (n * n if all_started else -1), os.getpid()  # four threads across two processes

    runs = [work(n) for n in range(4)]
    assert all(isinstance(r, DaskTaskRun) for r in runs)
    results = [r.get_result(timeout=60) for r in runs]
    assert [value for value, _ in results] == [0, 1, 4, 9]
    assert os.getpid() not in {pid for _, pid in results}


def test_exceptions_keep_their_type_and_message(runner: DaskRunner) -> None:
    @task(runner=runner)
    def broken() -> None:
        raise LookupError("no such row")

    run = broken()
    with pytest.raises(LookupError, match="no such row"):
        run.get_result(timeout=30)
    assert run.status == "failed"


def test_retries_run_on_the_worker_and_count_attempts(runner: DaskRunner, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    @task(runner=runner, retries=3, retry_sleep_time=0.05)
    def flaky() -> int:
        with counter.open("a") as f:
            f.write("x")
        if len(counter.read_text()) < 3:
            raise ConnectionError("not yet")
        return len(counter.read_text())

    run = flaky()
    assert run.get_result(timeout=30) == 3 and run.attempts == 3


def test_timeout_and_stop(runner: DaskRunner) -> None:
    @task(runner=runner, timeout=0.3)
    def slow() -> None:
        time.sleep(1.5)

    run = slow()
    run.wait(10)
    assert run.status == "timed_out"

    @task(runner=runner)
    def long() -> None:
        time.sleep(1.5)

    other = long()
    other.stop()
    assert other.status == "cancelled" and not other.is_running()


def test_a_graph_with_fan_out_and_fan_in(runner: DaskRunner, tmp_path: Path) -> None:
    persistence = StatePersistence()
    h = Harness(tmp_path, runner, state_persistence=persistence)  # type: ignore[arg-type]
    h.add("root", spec={"publish": {"region": "eu"}})
    for name in ("a", "b", "c", "d"):
        h.add(
            name,
            dependencies=["root"],
            labels={"layer": "mid"},
            spec={
                "await_start": ["a", "b", "c", "d"],  # the four middle tasks run at once
                "publish": {name: f"${{region}}-{name}"},
                "save_state": {"done": name},
            },
        )
    h.add("join", dependencies=[{"labels": {"layer": "mid"}}], spec={"publish": {"joined": True}})
    report = h.run()
    assert report.ok, report.summary()
    starts = [e["t"] for e in h.processor.events() if e["event"] == "start" and e["task"] in "abcd"]
    ends = [e["t"] for e in h.processor.events() if e["event"] == "end" and e["task"] in "abcd"]
    assert max(starts) <= min(ends)  # the four middle tasks ran at once
    assert h.seen("join") == {"region": "eu", "a": "eu-a", "b": "eu-b", "c": "eu-c", "d": "eu-d"}
    assert h.tasks.key_value_store.store["joined"] is True
    assert persistence.get_object_state("c") == {
        "done": "c"
    }  # saved on a worker, kept by the driver
    assert len({e["t"] for e in h.processor.events()}) > 1


def test_a_failing_task_skips_its_dependents_and_retries_apply(
    runner: DaskRunner, tmp_path: Path
) -> None:
    h = Harness(tmp_path, runner)  # type: ignore[arg-type]
    h.add("bad", spec={"fail": "worker says no"})
    h.add("child", dependencies=["bad"])
    h.add("flaky", spec={"fail_attempts": 1}, retries=1)
    h.add("fine")
    report = h.run()
    assert report["bad"].status == "failed" and "worker says no" in report["bad"].error
    assert report["child"].status == "skipped"
    assert report["flaky"].status == "succeeded" and report["flaky"].attempts == 2
    assert report["fine"].status == "succeeded"


def test_what_a_task_prints_and_logs_on_a_worker_is_kept_per_attempt(
    runner: DaskRunner, tmp_path: Path
) -> None:
    from opus_core.history import find_run

    h = Harness(tmp_path, runner)  # type: ignore[arg-type]
    h.add("talk", spec={"say": "from a worker", "fail_attempts": 1}, retries=1)
    report = h.run()
    assert report.ok, report.summary()
    [entry] = find_run(h.tasks.state_persistence, report.run_id or "latest")["tasks"]
    for number, attempt in enumerate(entry["attempt_log"], start=1):
        said = f"from a worker (attempt {number})"
        assert attempt["output"]["stdout"] == f"out: {said}\n"
        assert attempt["output"]["stderr"] == f"err: {said}\n"
        assert f"WARNING opus log: {said}" in attempt["output"]["log"]
        assert f"WARNING scripted: python log: {said}" in attempt["output"]["log"]


def test_a_cancelled_run(runner: DaskRunner, tmp_path: Path) -> None:
    h = Harness(tmp_path, runner)  # type: ignore[arg-type]
    released = tmp_path / "stopped"
    h.add("slow-1", spec={"release": str(released)})  # both run until the stop
    h.add("slow-2", spec={"release": str(released)})
    h.add("after", dependencies=["slow-1"])
    report = h.run_and_stop(running=2, release=released)
    assert report.interrupted
    assert {r.status for r in report} == {"cancelled"}


def test_connecting_to_an_explicit_scheduler_address(runner: DaskRunner) -> None:
    assert runner.cluster is not None
    remote = DaskRunner(address=runner.cluster.scheduler_address)

    @task(runner=remote)
    def where() -> int:
        return os.getpid()

    try:
        assert where().get_result(timeout=30) != os.getpid()
        assert remote.cluster is None  # it connected; it started nothing
    finally:
        remote.shutdown()
    assert runner.client.scheduler_info()["workers"]  # the cluster it used is still up


def test_an_unreachable_address_is_one_clear_error(tmp_path: Path) -> None:
    unreachable = DaskRunner(address="tcp://127.0.0.1:9", connect_timeout=1)
    with pytest.raises(
        DaskConnectionError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"
    ):
        unreachable.start()
    (tmp_path / "opus.toml").write_text(
        '[opus]\nrunner = "dask"\n[runners.dask]\naddress = "tcp://127.0.0.1:9"\nconnect_timeout = 1\n'
        '[[tasks]]\nkind = "Noop"\nversion = "v1"\n'
    )
    (tmp_path / "noop.py").write_text(
        "from opus_core import TaskProcessor\nclass Noop(TaskProcessor):\n    kind = 'Noop'\n"
        "    def process_task(self, task, command, context, key_value_store, state_persistence):\n        pass\n"
    )
    with (tmp_path / "opus.toml").open("a") as f:
        f.write("")
    text = (
        (tmp_path / "opus.toml")
        .read_text()
        .replace('runner = "dask"', 'runner = "dask"\nprocessors = ["noop:Noop"]')
    )
    (tmp_path / "opus.toml").write_text(text)
    result = opus("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "opus: error: cannot connect to the Dask scheduler at tcp://127.0.0.1:9"
    )
    assert "Traceback" not in result.stderr


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="n_workers must be a whole number"):
        DaskRunner(n_workers=0)
    with pytest.raises(ValueError, match="leave them out when connecting"):
        DaskRunner(address="tcp://x:1", n_workers=2)


def test_bad_option_from_config(tmp_path: Path) -> None:
    config = tmp_path / "opus.toml"
    config.write_text('[opus]\nrunner = "dask"\n[runners.dask]\nprocesses = "yes"\n')
    with pytest.raises(ConfigError, match="runners.dask.processes must be true or false"):
        Tasks.from_config(config)


def test_opus_run_runs_the_pipeline_example_on_dask(tmp_path: Path) -> None:
    result = opus(
        "run",
        "--config",
        str(EXAMPLES / "pipeline" / "opus.toml"),
        "-v",
        "--runner",
        "dask",
        "--context",
        "dev",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 succeeded" in result.stdout
    assert "task 'web' succeeded" in result.stderr  # a log line
    assert any(
        line.split()[:3] == ["smoke-test", "succeeded", "2"] for line in result.stdout.splitlines()
    )


class Logged(TaskProcessor):
    """Logs when it starts and ends (the monotonic clock, the same in every process)."""

    kind = "Logged"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        fd = os.open(task.spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"start {time.monotonic_ns()}\n".encode())
            time.sleep(0.05)
            os.write(fd, f"end {time.monotonic_ns()}\n".encode())
        finally:
            os.close(fd)
        return {}


def most_at_once(log: Path) -> int:
    events = sorted(
        (int(at), what == "start") for what, at in map(str.split, log.read_text().splitlines())
    )
    now = peak = 0
    for _, starting in events:
        now += 1 if starting else -1
        peak = max(peak, now)
    return peak


def test_needs_the_workers_declare_go_to_dask_as_worker_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opus_core.testing import reset_caches

    # One worker with four threads and one gpu: the engine would let four run at once
    # (gpu = 4 in its capacities); Dask, told each needs the gpu, runs one at a time.
    gpu_runner = DaskRunner(
        n_workers=1, threads_per_worker=4, processes=True, cluster_kwargs={"resources": {"gpu": 1}}
    )
    engine = Tasks(runner=gpu_runner, resources={"gpu": 4})
    engine.register_task_processor(Logged())
    log = tmp_path / "log"
    for i in range(4):
        engine.add_task(
            Task(
                "Logged",
                "v1",
                metadata={"name": f"t{i}", "resources": {"gpu": 1}},
                spec={"log": str(log)},
            )
        )
    (tmp_path / "opus.toml").write_text("[resources]\ngpu = 4\n")  # for the function tasks
    monkeypatch.chdir(tmp_path)
    reset_caches()
    try:
        assert engine.process_context().ok

        @task(runner=gpu_runner, resources={"gpu": 1})
        def train(n: int) -> int:
            return n

        assert [r.get_result(timeout=60) for r in [train(1), train(2)]] == [1, 2]
    finally:
        gpu_runner.shutdown()
        reset_caches()
    assert most_at_once(log) == 1


def test_random_graphs_with_resources_never_hold_more_than_the_capacity_on_dask(
    runner: DaskRunner, tmp_path: Path
) -> None:
    import random

    import test_resources  # the core's fuzz: its graphs and its check of the log

    cloudpickle.register_pickle_by_value(test_resources)
    rng = random.Random("resources-dask")
    starts = 0
    for number in range(30):
        log = tmp_path / f"log-{number}"
        tasks, capacities = test_resources.graph(rng, log)
        engine = Tasks(runner=runner, resources=capacities)
        engine.register_task_processor(test_resources.Busy())
        for manifest in tasks:
            engine.add_task(manifest)
        report = engine.process_context()
        starts += test_resources.check_log(log, tasks, capacities, report)
    assert starts > 30 * 4
