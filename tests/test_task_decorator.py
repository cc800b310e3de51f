"""`@task`: function tasks that start on a runner when called."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import interruptible
from harness import PATIENCE, until

from opus_core import MultiprocessTaskRun, SequentialTaskRun, task
from opus_core.runners import BaseTaskRun, SequentialRunner


def test_bare_decorator_keeps_the_function_and_defaults() -> None:
    @task
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert double.fn(4) == 8
    assert double.name == "double" and double.__doc__ == "Twice x."
    assert (double.retries, double.retry_sleep_time) == (0, 0)
    run = double(21)
    assert isinstance(run, BaseTaskRun)
    assert run.get_result(timeout=5) == 42


def test_default_runner_is_a_separate_process() -> None:
    @task
    def pid() -> int:
        return os.getpid()

    run = pid()
    assert isinstance(run, MultiprocessTaskRun)
    assert run.get_result(timeout=5) != os.getpid()


def test_options_are_kept() -> None:
    @task(name="renamed", retries=3, retry_sleep_time=0.5, timeout=9, runner="sequential")
    def f() -> None:
        pass

    assert (f.name, f.retries, f.retry_sleep_time, f.timeout) == ("renamed", 3, 0.5, 9)
    assert f().instance_name.startswith("renamed-")


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retry_sleep_time": -2}, "retry_sleep_time"),
        ({"retry_sleep_time": "1"}, "retry_sleep_time"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"name": ""}, "name"),
        ({"runner": 3}, "runner"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(options: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=f"@task {argument}"):
        task(**options)(print)


def test_a_non_callable_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs a callable"):
        task(42)  # type: ignore[call-overload]


def test_calling_starts_at_once_without_blocking(tmp_path: Path) -> None:
    release = tmp_path / "release"

    @task
    def slow() -> str:
        return "done" if until(release.exists) else "never released"

    run = slow()  # returns while the task waits for what only this caller can do
    assert run.is_running()
    release.touch()
    assert run.get_result(timeout=60) == "done"


def test_ten_sleepy_workers_run_at_once(tmp_path: Path) -> None:
    @task
    def sleepy(n: int) -> int:
        (tmp_path / f"started-{n}").touch()
        all_started = until(lambda: len(list(tmp_path.glob("started-*"))) == 10)
        return n if all_started else -n  # none ends before all ten have started

    runs = [sleepy(n) for n in range(10)]
    assert [r.get_result(timeout=60) for r in runs] == list(range(10))


@pytest.mark.parametrize("runner", ["sequential", "process"])
def test_retries_run_where_the_task_runs_and_count_attempts(tmp_path: Path, runner: str) -> None:
    counter = tmp_path / "attempts"

    @task(retries=3, retry_sleep_time=0.1, runner=runner)
    def flaky() -> int:
        with counter.open("a") as f:
            f.write(f"{time.monotonic()} {os.getpid()}\n")
        attempts = len(counter.read_text().splitlines())
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts} failed")
        return attempts

    run = flaky()
    assert run.get_result(timeout=10) == 3
    assert run.attempts == 3
    lines = [line.split() for line in counter.read_text().splitlines()]
    times = [float(t) for t, _ in lines]
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(times))
    assert len({pid for _, pid in lines}) == 1  # all attempts in the same place


@pytest.mark.parametrize("runner", ["sequential", "process"])
def test_retries_run_out_and_the_last_error_is_raised(runner: str) -> None:
    @task(retries=2, runner=runner)
    def always() -> None:
        raise KeyError("still broken")

    run = always()
    with pytest.raises(KeyError, match="still broken"):
        run.get_result(timeout=10)
    assert run.attempts == 3 and run.status == "failed"


def test_timeout_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    @task(timeout=0.5)
    def hang() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    run = hang()
    error = run.get_result(timeout=30, raise_exceptions=False)  # not the task's minute
    assert run.status == "timed_out"
    assert "timed out after 0.5s" in str(error)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if ") Z" in stat:
            break
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists() or ") Z" in Path(f"/proc/{pid}/stat").read_text()


def test_timeout_interrupts_a_sequential_task_in_the_main_thread(tmp_path: Path) -> None:
    @task(timeout=0.3, runner="sequential")
    def hang() -> None:
        time.sleep(10)
        (tmp_path / "slept").touch()

    run = hang()
    assert run.status == "timed_out"
    assert not (tmp_path / "slept").exists()  # interrupted, not waited for


def test_stop_cancels_a_running_task() -> None:
    @task
    def hang() -> None:
        time.sleep(30)

    run = hang()
    run.stop()
    assert run.status == "cancelled" and not run.is_running()


def test_seed_run_classes_are_accepted_as_runner() -> None:
    @task(runner=SequentialTaskRun)
    def here() -> int:
        return os.getpid()

    @task(runner=MultiprocessTaskRun)
    def there() -> int:
        return os.getpid()

    assert here().get_result() == os.getpid()
    assert there().get_result(timeout=5) != os.getpid()


def test_a_runner_instance_is_used_as_given() -> None:
    runner = SequentialRunner()

    @task(runner=runner)
    def f() -> str:
        return "ok"

    assert isinstance(f(), SequentialTaskRun)


WAITER = """
import signal, sys, threading, time
from pathlib import Path
from opus_core import task

# Ctrl-C's SIGINT goes to whichever thread the kernel picks: here, never the main one.
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

@task(runner="process")
def slow():
    time.sleep(60)

def mark_when_waiting(main=threading.main_thread().ident):
    # The marker says the main thread is inside get_result, where the signal must reach it.
    while True:
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code.co_name != "get_result":
            frame = frame.f_back
        if frame is not None:
            Path(sys.argv[1]).write_text("waiting")
            return
        time.sleep(0.01)

run = slow()
threading.Thread(target=mark_when_waiting, daemon=True).start()
try:
    run.get_result()
except KeyboardInterrupt:
    run.stop()
    print("interrupted")
"""


def test_ctrl_c_interrupts_get_result_whichever_thread_takes_the_signal(tmp_path: Path) -> None:
    script, marker = tmp_path / "waiter.py", tmp_path / "waiting"
    script.write_text(WAITER)
    proc = interruptible([sys.executable, str(script), str(marker)])
    assert until(marker.exists), "get_result was never reached"
    proc.send_signal(signal.SIGINT)
    # Not interrupted, get_result would return after the task's minute, printing nothing.
    out, _ = proc.communicate(timeout=90)
    assert out.strip() == "interrupted"
