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


def test_calling_starts_at_once_without_blocking() -> None:
    @task
    def slow() -> str:
        time.sleep(0.5)
        return "done"

    start = time.monotonic()
    run = slow()
    assert time.monotonic() - start < 0.3
    assert run.is_running()
    assert run.get_result(timeout=5) == "done"


def test_ten_sleepy_workers_finish_together() -> None:
    @task
    def sleepy(n: int) -> int:
        time.sleep(1)
        return n

    start = time.monotonic()
    runs = [sleepy(n) for n in range(10)]
    assert [r.get_result(timeout=10) for r in runs] == list(range(10))
    assert time.monotonic() - start < 1.9


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
        time.sleep(30)

    start = time.monotonic()
    run = hang()
    error = run.get_result(timeout=5, raise_exceptions=False)
    elapsed = time.monotonic() - start
    assert run.status == "timed_out"
    assert "timed out after 0.5s" in str(error)
    assert elapsed < 1.5
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if ") Z" in stat:
            break
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists() or ") Z" in Path(f"/proc/{pid}/stat").read_text()


def test_timeout_interrupts_a_sequential_task_in_the_main_thread() -> None:
    @task(timeout=0.3, runner="sequential")
    def hang() -> None:
        time.sleep(10)

    start = time.monotonic()
    run = hang()
    assert time.monotonic() - start < 2
    assert run.status == "timed_out"


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
    time.sleep(30)

run = slow()
Path(sys.argv[1]).write_text("waiting")
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
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # inside get_result by now
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert out.strip() == "interrupted"
    assert time.monotonic() - sent < 5
