"""The runner interface and the built-in sequential and process runners."""

from __future__ import annotations

import ctypes
import faulthandler
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import alive

from opus_core import (
    MultiprocessTaskRun,
    OpusError,
    ProcessDiedError,
    RemoteTaskError,
    SequentialTaskRun,
    TaskCancelledError,
    TaskTimeoutError,
)
from opus_core.runners import (
    BaseTaskRun,
    ProcessRunner,
    Runner,
    SequentialRunner,
    resolve_runner,
)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


class CustomError(Exception):
    pass


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


# -- both runners ---------------------------------------------------------------


@pytest.fixture(params=["sequential", "process"])
def runner(request) -> Runner:
    with resolve_runner(request.param) as runner:
        yield runner


def test_result_comes_back(runner: Runner) -> None:
    run = runner.submit(pow, 2, 10)
    assert run.get_result(timeout=5) == 1024
    assert run.done() and not run.is_running()
    assert run.status == "succeeded"
    assert run.instance_name.startswith("pow-") and len(run.instance_name) > len("pow-")


def test_exception_keeps_its_type_and_message(runner: Runner) -> None:
    def fail() -> None:
        raise CustomError("the answer is not 42")

    run = runner.submit(fail)
    with pytest.raises(CustomError, match="the answer is not 42"):
        run.get_result(timeout=5)
    returned = run.get_result(raise_exceptions=False)
    assert isinstance(returned, CustomError) and str(returned) == "the answer is not 42"
    assert run.status == "failed"


def test_closures_and_local_functions_run(runner: Runner) -> None:
    base = {"n": 40}

    def add(x: int) -> int:
        return base["n"] + x

    assert runner.submit(add, x=2).get_result(timeout=5) == 42


def test_done_callbacks_fire_once_even_when_added_late(runner: Runner) -> None:
    run = runner.submit(lambda: "x")
    run.wait(5)
    seen: list[BaseTaskRun] = []
    run.add_done_callback(seen.append)
    assert seen == [run]


def test_a_custom_runner_subclasses_a_builtin_one() -> None:
    calls: list[str] = []

    class Recording(SequentialRunner):
        name = "recording"

        def __init__(self, prefix: str = "") -> None:
            self.prefix = prefix

        def submit(self, fn, /, *args, **kwargs):
            calls.append(self.prefix + fn.__name__)
            return super().submit(fn, *args, **kwargs)

    runner = resolve_runner(Recording, prefix="rec:")
    assert runner.submit(abs, -3).get_result() == 3
    assert calls == ["rec:abs"]
    assert resolve_runner("recording", {"recording": Recording}).name == "recording"


def test_seed_run_classes_select_the_builtin_runners() -> None:
    assert isinstance(resolve_runner(SequentialTaskRun), SequentialRunner)
    assert isinstance(resolve_runner(MultiprocessTaskRun), ProcessRunner)


def test_unknown_runner_name_lists_the_installed_ones() -> None:
    with pytest.raises(
        OpusError,
        match="unknown runner 'warp'; installed runners: process, processpool, sequential",
    ):
        resolve_runner("warp")


# -- sequential -----------------------------------------------------------------


def test_sequential_runs_in_the_caller_and_blocks() -> None:
    caller = threading.get_ident()
    run = SequentialRunner().submit(threading.get_ident)
    assert run.done() and not run.is_running()
    assert run.get_result() == caller
    assert isinstance(run, SequentialTaskRun)


# -- process --------------------------------------------------------------------


def test_process_runs_in_another_process() -> None:
    run = ProcessRunner().submit(os.getpid)
    assert isinstance(run, MultiprocessTaskRun)
    assert run.get_result(timeout=5) not in (os.getpid(), None)


def test_unpicklable_exception_comes_back_with_its_type_name_and_message() -> None:
    def fail() -> None:
        raise Unpicklable("cannot travel")

    error = ProcessRunner().submit(fail).get_result(timeout=5, raise_exceptions=False)
    assert isinstance(error, RemoteTaskError)
    assert error.remote_type.endswith("Unpicklable")
    assert "cannot travel" in str(error)
    assert any("raised in the task's process" in note for note in error.__notes__)


def test_unpicklable_result_is_a_clear_error() -> None:
    error = ProcessRunner().submit(threading.Lock).get_result(timeout=5, raise_exceptions=False)
    assert isinstance(error, OpusError)
    assert "result of task 'allocate_lock' could not be sent back" in str(error)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (lambda: os._exit(3), "exited with code 3"),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), "was killed by SIGKILL"),
        # pytest's faulthandler, inherited by the child, would print the crash's stack
        (lambda: (faulthandler.disable(), ctypes.string_at(0)), "was killed by SIGSEGV"),
    ],
    ids=["os._exit", "sigkill", "segfault"],
)
def test_a_process_that_dies_without_a_result_is_reported(how, expected: str) -> None:
    run = ProcessRunner().submit(how)
    error = run.get_result(timeout=10, raise_exceptions=False)
    assert isinstance(error, ProcessDiedError)
    assert expected in str(error) and "without sending back a result" in str(error)


def test_get_result_times_out_while_the_task_runs() -> None:
    run = ProcessRunner().submit(time.sleep, 60)  # stopped below: still running till then
    with pytest.raises(TimeoutError, match="did not finish within 0.1s"):
        run.get_result(timeout=0.1)
    assert run.is_running()
    assert not run.wait(0.05)
    run.stop()


def test_stop_kills_the_process_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    def spawn_and_sleep() -> None:
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        partial = pids.with_name("pids.partial")
        partial.write_text(f"{os.getpid()} {child}")
        partial.replace(pids)  # whole when it appears
        time.sleep(60)

    run = ProcessRunner().submit(spawn_and_sleep)
    assert wait_until(pids.exists)
    parent, child = map(int, pids.read_text().split())
    run.stop()
    assert run.done() and run.status == "cancelled"
    with pytest.raises(TaskCancelledError):
        run.get_result()
    assert wait_until(lambda: not alive(parent) and not alive(child))


def test_a_result_larger_than_a_pipe_comes_back_whole() -> None:
    payload = os.urandom(3_000_000)
    assert ProcessRunner().submit(bytes, payload).get_result(timeout=10) == payload


def test_a_multiprocessing_queue_passed_to_a_task_works() -> None:
    queue = multiprocessing.get_context("fork").Queue()
    queue.put("from the caller")  # the caller's feeder thread is running now
    assert queue.get(timeout=5) == "from the caller"
    run = ProcessRunner().submit(queue.put, "from the task")
    run.get_result(timeout=5)
    assert queue.get(timeout=5) == "from the task"


def test_a_task_may_start_process_tasks_of_its_own() -> None:
    def outer() -> list[int]:
        runner = ProcessRunner()
        runs = [runner.submit(os.getpid) for _ in range(3)]
        return [run.get_result(timeout=5) for run in runs]

    runner = ProcessRunner()
    # the caller's watcher is busy with other runs while the child starts its own
    sleepers = [runner.submit(time.sleep, 0.2) for _ in range(3)]
    inner = runner.submit(outer).get_result(timeout=10)
    assert len(set(inner)) == 3 and os.getpid() not in inner
    assert all(run.get_result(timeout=5) is None for run in sleepers)


def test_what_the_caller_printed_is_printed_once(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from opus_core.runners import ProcessRunner\n"
        "print('caller', end=' ')\n"  # still in the caller's buffer: stdout is a pipe
        "runner = ProcessRunner()\n"
        "runs = [runner.submit(print, 'task', i) for i in range(3)]\n"
        "[run.get_result(timeout=5) for run in runs]\n"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=buffered
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("caller") == 1
    assert sorted(result.stdout.split()) == sorted(
        ["caller", "task", "task", "task", "0", "1", "2"]
    )


def test_a_task_ends_after_the_threads_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "written-by-a-thread"

    def start_a_thread() -> int:
        threading.Thread(target=lambda: (time.sleep(0.2), marker.write_text("done"))).start()
        return os.getpid()

    run = ProcessRunner().submit(start_a_thread)
    pid = run.get_result(timeout=5)
    assert wait_until(lambda: not alive(pid))
    assert marker.read_text() == "done"


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        ProcessRunner(max_workers=0)


def test_timeout_error_is_an_opus_error_and_a_timeout_error() -> None:
    assert issubclass(TaskTimeoutError, OpusError) and issubclass(TaskTimeoutError, TimeoutError)


def _raise_custom(message: str) -> None:
    raise CustomError(message)
