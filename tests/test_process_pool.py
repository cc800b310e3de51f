"""The `processpool` runner: real worker processes, reused, and killed when a task must end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import alive, until
from test_examples import EXAMPLES, run_example
from test_process_lifetime import wait_for

from opus_core import (
    OpusError,
    Task,
    TaskProcessor,
    Tasks,
    TaskStatus,
    UpstreamFailedError,
    task,
)
from opus_core.errors import ProcessDiedError, RemoteTaskError, TaskTimeoutError
from opus_core.results import format_traceback
from opus_core.runners import BUILTIN_RUNNERS, ProcessPoolRunner, resolve_runner


@pytest.fixture
def pool() -> Iterator[ProcessPoolRunner]:
    runner = ProcessPoolRunner(max_workers=2)
    yield runner
    runner.shutdown(wait=False)


def pid() -> int:
    return os.getpid()


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pid_once_released(release: str) -> int:
    """This worker's pid, once the file `release` exists: a task busy until the test says."""
    until(Path(release).exists)
    return os.getpid()


def start_a_sleeper(pidfile: str) -> None:
    """Write this worker's pid and that of a `sleep` it starts, then hang."""
    sleeper = subprocess.Popen(["sleep", "60"])
    Path(pidfile).write_text(f"{os.getpid()} {sleeper.pid}")
    time.sleep(60)


def pids_in(pidfile: Path) -> list[int]:
    assert wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
    return [int(word) for word in pidfile.read_text().split()]


def fails() -> None:
    raise ValueError("bad input")


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raises_unpicklable() -> None:
    raise Unpicklable()


def segfault() -> None:
    import ctypes
    import faulthandler

    faulthandler.disable()  # pytest's: it would print this worker's stack
    ctypes.string_at(0)


# -- reuse -------------------------------------------------------------------------------------


def test_many_tasks_reuse_few_worker_processes(pool: ProcessPoolRunner) -> None:
    runs = [pool.submit(pid) for _ in range(300)]
    pids = {run.get_result(timeout=10) for run in runs}
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids


def test_it_is_a_built_in_runner_with_a_max_workers_option() -> None:
    assert BUILTIN_RUNNERS["processpool"] is ProcessPoolRunner
    assert resolve_runner("processpool", max_workers=3).max_concurrency == 3
    assert ProcessPoolRunner().max_concurrency == os.cpu_count()
    with pytest.raises(ValueError, match="max_workers must be a whole number of at least 1"):
        ProcessPoolRunner(max_workers=0)


# -- killing --------------------------------------------------------------------------------------


def test_a_timeout_kills_the_worker_and_a_fresh_one_runs_the_next_task(
    pool: ProcessPoolRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    run = task(runner=pool, timeout=0.5)(start_a_sleeper)(str(pidfile))
    worker, sleeper = pids_in(pidfile)
    error = run.get_result(timeout=5, raise_exceptions=False)
    assert run.status == TaskStatus.TIMED_OUT and isinstance(error, TaskTimeoutError)
    assert wait_for(lambda: not alive(worker)), "the worker outlived its task's timeout"
    assert wait_for(lambda: not alive(sleeper)), "what the task started outlived its timeout"
    following = {pool.submit(pid).get_result(timeout=10) for _ in range(20)}
    assert worker not in following and following


def test_stop_kills_the_worker_and_leaves_the_other_tasks_alone(
    pool: ProcessPoolRunner, tmp_path: Path
) -> None:
    pidfile, release = tmp_path / "pids", tmp_path / "release"
    neighbour = pool.submit(pid_once_released, str(release))  # busy in the other worker
    stopped = pool.submit(start_a_sleeper, str(pidfile))
    worker, sleeper = pids_in(pidfile)
    stopped.stop()
    release.touch()
    assert stopped.status == TaskStatus.CANCELLED
    assert wait_for(lambda: not alive(worker)) and wait_for(lambda: not alive(sleeper))
    assert neighbour.get_result(timeout=10) not in (worker, os.getpid())
    assert pool.submit(pid).get_result(timeout=10) != worker


def test_a_task_stopped_while_it_waits_never_runs(pool: ProcessPoolRunner, tmp_path: Path) -> None:
    release = tmp_path / "release"
    busy = [pool.submit(pid_once_released, str(release)) for _ in range(2)]  # both workers
    marker = tmp_path / "ran"
    waiting = pool.submit(Path.touch, marker)
    waiting.stop()
    release.touch()
    for run in busy:
        run.get_result(timeout=10)
    assert pool.submit(pid).get_result(timeout=10)
    assert waiting.status == TaskStatus.CANCELLED and not marker.exists()


@pytest.mark.parametrize(
    ("end", "how"),
    [
        (lambda: os._exit(3), "exited with code 3"),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), "was killed by SIGKILL"),
        (segfault, "was killed by SIGSEGV"),
    ],
    ids=["exit", "sigkill", "segfault"],
)
def test_a_worker_that_dies_fails_only_its_task(pool: ProcessPoolRunner, end, how) -> None:  # type: ignore[no-untyped-def]
    neighbour = pool.submit(sleep_then_pid, 0.3)
    dying = pool.submit(end)
    error = dying.get_result(timeout=10, raise_exceptions=False)
    assert isinstance(error, ProcessDiedError) and how in str(error), error
    assert neighbour.get_result(timeout=10) != os.getpid()
    assert [pool.submit(abs, -n).get_result(timeout=10) for n in range(5)] == [0, 1, 2, 3, 4]


KILLED_PARENT = """
import os, sys, time
from pathlib import Path
from opus_core.runners import ProcessPoolRunner
from test_process_pool import start_a_sleeper

pool = ProcessPoolRunner(max_workers=3)
warm = [pool.submit(time.sleep, 0.3) for _ in range(3)]  # three workers, one to stay idle
for run in warm:
    run.get_result(timeout=10)
workers = [run.pid for run in warm]
for name in ("a", "b"):
    pool.submit(start_a_sleeper, sys.argv[1] + name)
print(*workers, flush=True)
time.sleep(60)
"""


def test_no_worker_outlives_a_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT, str(tmp_path / "pids-")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert parent.stdout is not None
    workers = [int(word) for word in parent.stdout.readline().split()]
    started = pids_in(tmp_path / "pids-a") + pids_in(tmp_path / "pids-b")
    assert len(set(workers)) == 3 and all(alive(p) for p in workers + started)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    for process in workers + started:  # busy and idle workers, and what the tasks started
        assert wait_for(lambda process=process: not alive(process)), f"{process} outlived opus"


def test_shutdown_without_waiting_cancels_and_kills(tmp_path: Path) -> None:
    pool = ProcessPoolRunner(max_workers=1)
    pidfile = tmp_path / "pids"
    running = pool.submit(start_a_sleeper, str(pidfile))
    waiting = pool.submit(pid)
    worker, sleeper = pids_in(pidfile)
    pool.shutdown(wait=False)
    assert running.status == waiting.status == TaskStatus.CANCELLED
    assert not alive(worker) and wait_for(lambda: not alive(sleeper))
    assert pool.submit(pid).get_result(timeout=10) != worker  # usable again: a new worker


# -- what travels -------------------------------------------------------------------------------


def test_exceptions_come_back_with_their_traceback(pool: ProcessPoolRunner) -> None:
    error = pool.submit(fails).get_result(timeout=10, raise_exceptions=False)
    assert isinstance(error, ValueError) and str(error) == "bad input"
    assert 'raise ValueError("bad input")' in format_traceback(error)
    assert "in fails" in format_traceback(error)
    unpicklable = pool.submit(raises_unpicklable).get_result(timeout=10, raise_exceptions=False)
    assert isinstance(unpicklable, RemoteTaskError)
    assert "Unpicklable: holds a lock" in str(unpicklable)
    assert "in raises_unpicklable" in format_traceback(unpicklable)
    with pytest.raises(OpusError, match="could not be sent back"):
        pool.submit(threading.Lock).get_result(timeout=10)


def test_closures_lambdas_and_arguments_that_cannot_be_pickled(pool: ProcessPoolRunner) -> None:
    factor = 3
    lock = threading.Lock()

    def closure(x: int) -> int:
        return x * factor

    assert pool.submit(closure, 2).get_result(timeout=10) == 6
    assert pool.submit(lambda: factor + 1).get_result(timeout=10) == 4
    # A lock cannot be pickled: a worker forked for the task inherits it.
    assert pool.submit(lambda held: held.locked(), lock).get_result(timeout=10) is False
    assert pool.submit(pid).get_result(timeout=10) != os.getpid()


LATE_FUNCTIONS = """
import os
from opus_core import task
from opus_core.runners import ProcessPoolRunner

pool = ProcessPoolRunner(max_workers=1)
first = pool.submit(os.getpid).get_result(timeout=10)


def late(x):  # defined after the worker was forked: that worker does not know it
    return x * 2


@task(runner=pool)
def decorated(x):
    return x + 1


print(pool.submit(late, 21).get_result(timeout=10), decorated(decorated(1)).get_result(timeout=10))
"""


def test_functions_defined_after_the_workers_started(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LATE_FUNCTIONS], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "3"]


# -- function tasks and manifest tasks ----------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def total(values: list[int], extra: dict[str, int]) -> int:
    return sum(values) + sum(extra.values())


def test_function_tasks_compose(pool: ProcessPoolRunner) -> None:
    step = task(runner=pool, retries=1)(inc)
    add_up = task(runner=pool)(total)
    first = step(0)
    mapped = step.map([first, 10, 20])
    assert add_up(mapped, {"one": step(first)}).get_result(timeout=10) == 2 + 11 + 21 + 2
    after = add_up.submit([1], {}, wait_for=[first]).get_result(timeout=10)
    assert after == 1
    broken = step("x")
    with pytest.raises(UpstreamFailedError):
        step(broken).get_result(timeout=10)


class Deploy(TaskProcessor):
    kind = "Deploy"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        if task.spec.get("hang"):
            time.sleep(60)
        state_persistence.save_object_state(task.task_id, {"pid": os.getpid()})
        return {
            f"{task.task_id}_pid": os.getpid(),
            "seen": key_value_store.store.get("seen", 0) + 1,
        }


def test_manifest_tasks_run_on_workers_and_time_out(tmp_path: Path) -> None:
    tasks = Tasks(runner="processpool")
    tasks.register_task_processor(Deploy())
    tasks.add_task(Task("Deploy", "v1", metadata={"name": "a"}))
    tasks.add_task(Task("Deploy", "v1", metadata={"name": "b", "dependencies": ["a"]}))
    tasks.add_task(
        Task("Deploy", "v1", metadata={"name": "stuck", "timeout": 0.3}, spec={"hang": True})
    )
    report = tasks.process_context()
    assert report["a"].status == report["b"].status == TaskStatus.SUCCEEDED
    assert report["stuck"].status == TaskStatus.TIMED_OUT
    values = tasks.key_value_store.store
    assert values["seen"] == 2 and os.getpid() not in (values["a_pid"], values["b_pid"])
    assert tasks.state_persistence.get_object_state("b") == {"pid": values["b_pid"]}


def test_the_pipeline_example_runs_on_processpool() -> None:
    result = run_example(
        str(EXAMPLES / "pipeline.py"), "--context", "dev", "--runner", "processpool"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web using db.internal:5432 and cache.internal:6379 (dev)" in result.stdout
    assert "smoke-test   succeeded  attempts=2" in result.stdout
    assert "smoke test: http://web.internal answered" in result.stdout


def test_opus_toml_selects_it(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text(
        textwrap.dedent(
            """
            [opus]
            runner = "processpool"

            [runners.processpool]
            max_workers = 1
            """
        )
    )
    tasks = Tasks.from_config(tmp_path / "opus.toml")
    assert tasks.runner is ProcessPoolRunner and tasks.runner_options == {"max_workers": 1}


def test_a_timeout_counts_from_when_a_worker_takes_the_task_not_from_the_queue(
    tmp_path: Path,
) -> None:
    from opus_core import task

    runner = ProcessPoolRunner(max_workers=1)
    first_started = tmp_path / "first"
    release = tmp_path / "release"

    @task(runner=runner)
    def hold() -> str:
        first_started.touch()
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "held"

    @task(runner=runner, timeout=1)
    def quick() -> str:
        return "quick"

    try:
        held = hold()
        assert wait_for(first_started.exists)
        queued = quick()  # waits for the one worker, longer than its timeout
        assert not queued.wait(1.5)  # the queue's time is not its own
        release.touch()
        assert held.get_result(timeout=60) == "held"
        assert queued.get_result(timeout=60) == "quick"
    finally:
        release.touch()
        runner.shutdown()


def _pid() -> int:
    return os.getpid()


def test_max_tasks_per_worker_replaces_a_worker_after_that_many_tasks() -> None:
    runner = ProcessPoolRunner(max_workers=1, max_tasks_per_worker=2)
    try:
        pids = [runner.submit(_pid).get_result(timeout=60) for _ in range(5)]
    finally:
        runner.shutdown()
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4], pids
    assert all(wait_for(lambda pid=pid: not alive(pid)) for pid in set(pids))


def test_max_tasks_per_worker_must_be_a_whole_number_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_tasks_per_worker must be a whole number"):
        ProcessPoolRunner(max_tasks_per_worker=0)
