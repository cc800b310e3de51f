"""The ray runner on the session's cluster, driven from this process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from harness import Harness, alive, until
from opus_plugin_ray import RayRunner, RayTaskRun

from opus_core import (
    ConfigError,
    StatePersistence,
    Task,
    TaskProcessor,
    Tasks,
    UpstreamFailedError,
    task,
)
from opus_core.plugin.manager import PluginManager

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
]  # a real Ray cluster; one worker for all

# Functions defined here travel to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PATIENCE = 120.0


def wait_for_file(path: Path) -> str:
    """What `path` holds, once it exists (at most `PATIENCE` seconds)."""
    assert until(path.exists, PATIENCE), f"{path} did not appear"
    return path.read_text()


def write_pid_and_sleep(path: str, seconds: float) -> None:
    """Write this process's id to `path` (whole), then sleep."""
    Path(path + ".partial").write_text(str(os.getpid()))
    os.replace(path + ".partial", path)
    time.sleep(seconds)


@pytest.fixture(scope="module")
def runner(ray_address: str) -> Iterator[RayRunner]:
    runner = RayRunner(address=ray_address)
    runner.start()
    yield runner
    runner.shutdown()


def test_registered_through_its_entry_point() -> None:
    assert PluginManager().runners()["ray"] is RayRunner


def test_importing_the_plugin_does_not_import_ray() -> None:
    code = "import sys, opus_plugin_ray; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False"], result.stderr


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="num_cpus must be a whole number"):
        RayRunner(num_cpus=0)
    with pytest.raises(ValueError, match="leave it out when connecting"):
        RayRunner(address="auto", num_cpus=2)


def test_bad_option_from_config(tmp_path: Path) -> None:
    config = tmp_path / "opus.toml"
    config.write_text('[opus]\nrunner = "ray"\n[runners.ray]\nnum_cpus = "two"\n')
    with pytest.raises(ConfigError, match="runners.ray.num_cpus"):
        Tasks.from_config(config)


def test_the_cluster_s_cpus_cap_the_engine_s_tasks_in_flight(runner: RayRunner) -> None:
    assert runner.max_concurrency == 3  # the head's two and the second node's one
    assert RayRunner(max_workers=5).max_concurrency == 5


def test_values_stay_on_the_cluster_until_get_result(runner: RayRunner) -> None:
    @task(runner=runner)
    def grow(sides: list[float]) -> list[float]:
        return [side * 2 for side in sides]

    @task(runner=runner)
    def total(many: list[list[float]], scale: dict[str, float]) -> tuple[float, int]:
        return sum(sum(sides) for sides in many) * scale["by"], os.getpid()

    first = grow([1.0, 2.0])
    second = grow(first)  # passed as its ObjectRef
    both = total([first, second], scale={"by": 10.0})  # runs inside containers too
    value, pid = both.get_result(timeout=PATIENCE)
    assert value == (6.0 + 12.0) * 10 and pid != os.getpid()
    assert isinstance(first, RayTaskRun) and first.status == "succeeded"
    assert not first.fetched and not second.fetched  # never brought to the driver
    assert second.get_result() == [4.0, 8.0]


def test_map_starts_every_row_at_once(runner: RayRunner) -> None:
    @task(runner=runner)
    def square(n: int, offset: int = 0) -> int:
        return n * n + offset

    runs = square.map(range(8), offset=1)
    assert all(isinstance(run, RayTaskRun) and run.status_ref is not None for run in runs)
    assert [run.get_result(timeout=PATIENCE) for run in runs] == [n * n + 1 for n in range(8)]
    again = square.map(runs)  # runs of a map feed the next as ObjectRefs
    assert [run.get_result(timeout=PATIENCE) for run in again] == [
        (n * n + 1) ** 2 for n in range(8)
    ]
    for offset in (runs[1], runs[2]):  # a run passed whole to every row, two maps alike
        shifted = square.map(range(3), offset=offset)
        expected = [n * n + offset.get_result() for n in range(3)]
        assert [run.get_result(timeout=PATIENCE) for run in shifted] == expected


def test_an_exception_keeps_its_type_message_and_remote_traceback(runner: RayRunner) -> None:
    from opus_core.results import format_traceback

    @task(runner=runner)
    def broken(row: int) -> int:
        raise LookupError(f"no such row {row}")

    @task(runner=runner)
    def after(value: int) -> int:
        return value

    run = broken(7)
    dependent = after(run)
    with pytest.raises(LookupError, match="no such row 7"):
        run.get_result(timeout=PATIENCE)
    assert run.status == "failed"
    assert "in broken" in format_traceback(run.exception())  # type: ignore[arg-type]
    with pytest.raises(UpstreamFailedError, match="its input 'broken' failed"):
        dependent.get_result(timeout=PATIENCE)
    assert dependent.status == "skipped"


def test_retries_run_on_the_worker_and_count_attempts(runner: RayRunner, tmp_path: Path) -> None:
    counter = tmp_path / "attempts"

    @task(runner=runner, retries=3, retry_sleep_time=0.05)
    def flaky() -> int:
        with counter.open("a") as f:
            f.write("x")
        if len(counter.read_text()) < 3:
            raise ConnectionError("not yet")
        return len(counter.read_text())

    run = flaky()
    assert run.get_result(timeout=PATIENCE) == 3 and run.attempts == 3


def test_a_timeout_kills_the_task_s_process(runner: RayRunner, tmp_path: Path) -> None:
    @task(runner=runner, timeout=1)
    def sleeper(path: str) -> None:
        write_pid_and_sleep(path, 60)

    started = time.monotonic()
    run = sleeper(str(tmp_path / "pid"))
    run.wait(PATIENCE)
    took = time.monotonic() - started
    assert run.status == "timed_out"
    pid = int(wait_for_file(tmp_path / "pid"))
    assert until(lambda: not alive(pid), PATIENCE), f"the task's process {pid} still runs"
    print(f"timed out and killed {took:.2f}s after the call")  # shown with -s


def test_stop_kills_the_task_s_process_and_cancels_what_it_feeds(
    runner: RayRunner, tmp_path: Path
) -> None:
    @task(runner=runner)
    def sleeper(path: str) -> int:
        write_pid_and_sleep(path, 60)
        return 1

    @task(runner=runner)
    def after(value: int) -> int:
        return value

    run = sleeper(str(tmp_path / "pid"))
    dependent = after(run)
    pid = int(wait_for_file(tmp_path / "pid"))
    run.stop()
    assert run.status == "cancelled"
    # halt() returned once Ray reported the task ended: the worker it told to exit may
    # take a moment more to be gone, as after a timeout.
    assert until(lambda: not alive(pid), PATIENCE), f"the task's process {pid} still runs"
    assert dependent.wait(PATIENCE) and dependent.status == "skipped"


def test_what_a_task_prints_and_logs_comes_back_to_the_driver(
    runner: RayRunner, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    @task(runner=runner)
    def talk(word: str) -> int:
        print(f"printed {word}")
        print(f"to stderr {word}", file=sys.stderr)
        logging.getLogger("talker").warning("logged %s", word)
        return os.getpid()

    with caplog.at_level(logging.WARNING, logger="talker"):
        assert talk("hello").get_result(timeout=PATIENCE) != os.getpid()
    said = capsys.readouterr()
    assert said.out.count("printed hello\n") == 1
    assert said.err.count("to stderr hello\n") == 1
    [record] = [r for r in caplog.records if r.name == "talker"]
    assert record.getMessage() == "logged hello" and record.levelname == "WARNING"


class Where(TaskProcessor):
    """Publishes the name of the node it ran on (its workers' `NODE_NAME`)."""

    kind = "Where"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {task.task_id: os.environ.get("NODE_NAME")}


def test_declared_needs_become_ray_resources(
    runner: RayRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opus_core.testing import reset_caches

    engine = Tasks(runner=runner, resources={"second": 1})
    engine.register_task_processor(Where())
    for number in range(3):
        engine.add_task(
            Task("Where", "v1", metadata={"name": f"t{number}", "resources": {"second": 1}})
        )
    report = engine.process_context()
    assert report.ok, report.summary()
    assert {engine.key_value_store.store[f"t{n}"] for n in range(3)} == {"second"}

    (tmp_path / "opus.toml").write_text("[resources]\nsecond = 1\n")  # for the function tasks
    monkeypatch.chdir(tmp_path)
    reset_caches()
    try:

        @task(runner=runner, resources={"second": 1, "cpu": 1})
        def where() -> str | None:
            return os.environ.get("NODE_NAME")

        assert where().get_result(timeout=PATIENCE) == "second"
    finally:
        reset_caches()


def test_a_graph_with_fan_out_and_fan_in(runner: RayRunner, tmp_path: Path) -> None:
    persistence = StatePersistence()
    h = Harness(tmp_path, runner, state_persistence=persistence)  # type: ignore[arg-type]
    h.add("root", spec={"publish": {"region": "eu"}})
    for name in ("a", "b", "c"):
        h.add(
            name,
            dependencies=["root"],
            labels={"layer": "mid"},
            spec={
                "await_start": ["a", "b", "c"],  # the three middle tasks run at once
                "publish": {name: f"${{region}}-{name}"},
                "save_state": {"done": name},
            },
        )
    h.add("join", dependencies=[{"labels": {"layer": "mid"}}], spec={"publish": {"joined": True}})
    report = h.run()
    assert report.ok, report.summary()
    assert h.seen("join") == {"region": "eu", "a": "eu-a", "b": "eu-b", "c": "eu-c"}
    assert h.tasks.key_value_store.store["joined"] is True
    assert persistence.get_object_state("c") == {"done": "c"}  # saved on a worker


def test_a_failing_task_skips_its_dependents_and_retries_apply(
    runner: RayRunner, tmp_path: Path
) -> None:
    h = Harness(tmp_path, runner)  # type: ignore[arg-type]
    h.add("bad", spec={"fail": "worker says no"})
    h.add("child", dependencies=["bad"])
    h.add("flaky", spec={"fail_attempts": 1}, retries=1)
    report = h.run()
    assert report["bad"].status == "failed" and "worker says no" in report["bad"].error
    assert report["child"].status == "skipped"
    assert report["flaky"].status == "succeeded" and report["flaky"].attempts == 2


def test_a_second_runner_on_the_cluster_leaves_it_running(
    runner: RayRunner, ray_address: str
) -> None:
    other = RayRunner(address=ray_address)
    assert other.submit(pow, 2, 5).get_result(timeout=PATIENCE) == 32
    other.shutdown()
    assert runner.submit(pow, 2, 6).get_result(timeout=PATIENCE) == 64


def test_wait_and_as_completed_see_runs_end_as_ray_reports_them(
    runner: RayRunner, tmp_path: Path
) -> None:
    from opus_core import as_completed, wait

    release = tmp_path / "release"

    @task(runner=runner)
    def held(n: int) -> int:
        if n:  # the first ends at once, the others when released
            assert until(release.exists, PATIENCE)
        return n

    runs = [held(n) for n in range(3)]
    done, not_done = wait(runs, return_when="FIRST_COMPLETED")
    assert done == {runs[0]} and not_done == {runs[1], runs[2]}
    release.touch()
    assert sorted(run.get_result() for run in as_completed(runs, timeout=PATIENCE)) == [0, 1, 2]
