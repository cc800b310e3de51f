"""The threadpool runner: @task calls and the dependency graph on a shared pool."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from harness import PATIENCE, Harness, until
from opus_plugin_threadpool import ThreadPoolRunner, ThreadTaskRun, default_max_workers

from opus_core import ConfigError, TaskCancelledError, Tasks, task
from opus_core.plugin.manager import PluginManager


def test_registered_through_its_entry_point() -> None:
    manager = PluginManager()
    assert manager.runners()["threadpool"] is ThreadPoolRunner
    info = manager.provider("runners", "threadpool")
    assert (info.name, info.distribution, info.version) == (
        "threadpool",
        "opus-plugin-threadpool",
        "0.1.0",
    )


def test_options() -> None:
    assert ThreadPoolRunner().max_workers == default_max_workers() >= 8
    runner = ThreadPoolRunner(max_workers=3, thread_name_prefix="io")
    names = [
        runner.submit(lambda: threading.current_thread().name).get_result(timeout=5)
        for _ in range(3)
    ]
    assert all(name.startswith("io") for name in names)
    runner.shutdown()
    with pytest.raises(ValueError, match="max_workers"):
        ThreadPoolRunner(max_workers=0)


def test_task_calls_run_concurrently_on_the_pool() -> None:
    runner = ThreadPoolRunner(max_workers=10)
    all_running = threading.Barrier(10, timeout=PATIENCE)  # broken unless all ten run at once

    @task(runner=runner)
    def sleepy(n: int) -> tuple[int, str]:
        all_running.wait()
        return n, threading.current_thread().name

    runs = [sleepy(n) for n in range(10)]
    assert all(isinstance(r, ThreadTaskRun) for r in runs)
    results = [r.get_result(timeout=60) for r in runs]
    assert [n for n, _ in results] == list(range(10))
    assert len({name for _, name in results}) == 10
    runner.shutdown()


def test_exceptions_and_retries_come_back() -> None:
    attempts: list[int] = []

    @task(runner=ThreadPoolRunner(max_workers=2), retries=2, retry_sleep_time=0.05)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "third time"

    run = flaky()
    assert run.get_result(timeout=5) == "third time" and run.attempts == 3

    @task(runner="threadpool")
    def broken() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        broken().get_result(timeout=5)


def test_stop_cancels_a_run_that_has_not_started() -> None:
    runner = ThreadPoolRunner(max_workers=1)
    release = threading.Event()
    blocker = runner.submit(release.wait, 5)
    queued = runner.submit(lambda: "never")
    queued.stop()
    assert queued.status == "cancelled" and queued.future is not None and queued.future.cancelled()
    release.set()
    assert blocker.get_result(timeout=5) is True
    with pytest.raises(TaskCancelledError):
        queued.get_result()
    runner.shutdown()


def test_stop_and_timeout_release_the_caller_while_the_thread_finishes(tmp_path: Path) -> None:
    done = tmp_path / "done"
    release = threading.Event()

    @task(runner=ThreadPoolRunner(max_workers=2), timeout=0.2)
    def slow() -> None:
        release.wait(PATIENCE)
        partial = done.with_name("done.partial")
        partial.write_text("finished")
        partial.replace(done)  # whole when it appears

    run = slow()
    error = run.get_result(timeout=60, raise_exceptions=False)
    assert run.status == "timed_out" and "timed out after 0.2s" in str(error)
    assert not done.exists()  # the caller was released before the thread was
    release.set()
    assert until(done.exists)
    assert done.read_text() == "finished"  # the thread went on in the background


def gated_chain(
    runner: ThreadPoolRunner, links: int
) -> tuple[threading.Event, list[ThreadTaskRun], list[str]]:
    """A chain of `links` calls, each given the run before it, whose first waits for the
    event returned: so every dependent exists before the first link ends. Each link says
    on which thread it ran."""
    gate = threading.Event()
    threads: list[str] = []

    @task(runner=runner)
    def step(previous: int) -> int:
        if previous == 0:
            gate.wait(PATIENCE)
        threads.append(threading.current_thread().name)
        return previous + 1

    runs = [step(0)]
    for _ in range(links - 1):
        runs.append(step(runs[-1]))
    return gate, runs, threads  # type: ignore[return-value]


def test_a_chain_of_runs_goes_from_link_to_link_on_one_thread() -> None:
    runner = ThreadPoolRunner(max_workers=4)
    gate, runs, threads = gated_chain(runner, 50)
    gate.set()
    assert runs[-1].get_result(timeout=PATIENCE) == 50
    assert len(threads) == 50 and len(set(threads)) == 1  # no trip through the queue
    runner.shutdown()


def test_a_done_callback_that_waits_for_the_next_link_does_not_wait_for_ever() -> None:
    # The dependent a run made ready is done by its thread after its callbacks: a
    # callback that waits for it has it done now, on that thread.
    runner = ThreadPoolRunner(max_workers=2)
    gate, runs, threads = gated_chain(runner, 3)
    seen: list[int] = []
    runs[0].add_done_callback(lambda _: seen.append(runs[1].get_result(timeout=PATIENCE)))
    gate.set()
    assert runs[2].get_result(timeout=PATIENCE) == 3
    assert seen == [2] and len(set(threads)) == 1
    runner.shutdown()


def test_a_dependent_stopped_by_a_done_callback_does_not_run() -> None:
    runner = ThreadPoolRunner(max_workers=2)
    gate, runs, threads = gated_chain(runner, 3)
    runs[0].add_done_callback(lambda _: runs[1].stop())
    gate.set()
    assert runs[2].wait(PATIENCE)
    assert [run.status for run in runs] == ["succeeded", "cancelled", "skipped"]
    assert len(threads) == 1  # only the first link ran
    runner.shutdown()


def test_graph_runs_on_the_pool_with_dependencies_and_values(tmp_path: Path) -> None:
    h = Harness(tmp_path, "threadpool")
    for name in ("a", "b", "c"):  # none ends before all three have started
        h.add(name, spec={"await_start": ["a", "b", "c"], "publish": {name: name.upper()}})
    h.add("join", dependencies=["a", "b", "c"], spec={"publish": {"joined": True}})
    h.add("bad", spec={"fail": "nope"})
    h.add("after-bad", dependencies=["bad"])
    report = h.run()
    events = h.processor.events()
    starts = [e["t"] for e in events if e["event"] == "start" and e["task"] in "abc"]
    ends = [e["t"] for e in events if e["event"] == "end" and e["task"] in "abc"]
    assert max(starts) <= min(ends)  # a, b and c ran together
    assert report["join"].status == "succeeded"
    assert h.seen("join") == {"a": "A", "b": "B", "c": "C"}
    assert report["bad"].status == "failed" and report["after-bad"].status == "skipped"


def test_a_run_shuts_its_pool_down(tmp_path: Path) -> None:
    before = {t.name for t in threading.enumerate()}
    h = Harness(tmp_path, "threadpool")
    h.add("a")
    assert h.run().ok

    def pool_threads() -> set[str]:
        left = {t.name for t in threading.enumerate()} - before
        return {name for name in left if name.startswith("opus-threadpool")}

    assert until(lambda: not pool_threads()), pool_threads()


def test_bad_option_in_config_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "opus.toml"
    config.write_text('[opus]\nrunner = "threadpool"\n[runners.threadpool]\nmax_workers = "lots"\n')
    with pytest.raises(ConfigError, match="runners.threadpool.max_workers must be a whole number"):
        Tasks.from_config(config)
