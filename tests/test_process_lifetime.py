"""Task processes never outlive the opus that started them, whatever ends it.

Every `opus` here is a real process (`process=True`): how that process ends is the point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cli_helpers import OPUS, interruptible, opus
from harness import alive

PROCESSOR = """
import os, threading, time
from pathlib import Path
from opus_core import TaskProcessor


class Sleepy(TaskProcessor):
    kind = "Sleepy"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        if task.spec.get("grandchild"):  # something the task started: dies with it too
            import subprocess
            sleeper = subprocess.Popen(["sleep", "60"])
            Path(task.spec["grandchild"]).write_text(str(sleeper.pid))
        if task.spec.get("ignore_sigio"):  # a task that does not want the lifeline's signal
            import signal
            signal.signal(signal.SIGIO, signal.SIG_IGN)
        if task.spec.get("pool"):  # multiprocessing inside a task ends cleanly
            import multiprocessing
            with multiprocessing.Pool(2) as pool:
                assert pool.map(abs, [-1, -2]) == [1, 2]
        Path(task.spec["pidfile"]).write_text(str(os.getpid()))
        if task.spec.get("linger"):  # a thread the task leaves running, marking its end
            done = Path("linger.done").absolute()
            threading.Thread(target=lambda: (time.sleep(60), done.touch())).start()
            return {"done": True}
        time.sleep(task.spec.get("seconds", 60))
        return {"done": True}
"""


def project(root: Path, tasks: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sleepy.py").write_text(PROCESSOR)
    (root / "opus.toml").write_text(
        textwrap.dedent(
            """
            [opus]
            runner = "process"
            persistence = "file"
            processors = ["sleepy:Sleepy"]

            [persistence.file]
            directory = "state"
            """
        )
        + textwrap.dedent(tasks)
    )
    return root


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(root / ".user-config")
    return env


def wait_for(condition, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def started(pidfile: Path) -> int:
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    return int(pidfile.read_text())


TWO_SLEEPERS = """
[[tasks]]
kind = "Sleepy"
version = "v1"
metadata = { name = "quick" }
spec = { pidfile = "quick.pid", seconds = 0 }

[[tasks]]
kind = "Sleepy"
version = "v1"
metadata = { name = "slow", dependencies = ["quick"] }
spec = { pidfile = "slow.pid", grandchild = "sleeper.pid" }
"""


def test_a_killed_opus_takes_its_task_processes_with_it(tmp_path: Path) -> None:
    root = project(tmp_path, TWO_SLEEPERS)
    process = subprocess.Popen(
        [str(OPUS), "run"],
        cwd=root,
        env=environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    task = started(root / "slow.pid")
    sleeper = started(root / "sleeper.pid")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert wait_for(lambda: not alive(task)), "the task process outlived opus"
    assert wait_for(lambda: not alive(sleeper)), "what the task started outlived opus"


def test_sigterm_stops_the_run_like_ctrl_c_and_exits_143(tmp_path: Path) -> None:
    root = project(tmp_path, TWO_SLEEPERS)
    process = interruptible([str(OPUS), "run"], cwd=root, env=environment(root))
    task = started(root / "slow.pid")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr
    assert "1 succeeded, 1 cancelled" in stdout and "(interrupted)" in stdout
    assert wait_for(lambda: not alive(task))
    state = opus("state", "list", cwd=root, timeout=30, process=True)
    records = {line.split()[0]: line.split()[1] for line in state.stdout.splitlines()[1:]}
    assert records.get("opus-run:apply:default:quick") == "succeeded", state.stdout  # kept


def test_a_thread_a_task_leaves_running_does_not_keep_its_process_after_opus(
    tmp_path: Path,
) -> None:
    root = project(
        tmp_path,
        """
        [[tasks]]
        kind = "Sleepy"
        version = "v1"
        metadata = { name = "lingerer" }
        spec = { pidfile = "lingerer.pid", linger = true }
        """,
    )
    result = opus("run", cwd=root, timeout=90, process=True)
    assert result.returncode == 0, result.stderr
    assert not (root / "linger.done").exists()  # opus did not wait for the thread's minute
    task = int((root / "lingerer.pid").read_text())
    assert wait_for(lambda: not alive(task)), "the lingering task process outlived opus"


SCRIPT = """
import os, sys, threading, time
from opus_core import task


@task
def leave_a_thread():
    done = os.path.abspath("linger.done")
    threading.Thread(target=lambda: (time.sleep(60), open(done, "w"))).start()
    return os.getpid()


print(leave_a_thread().get_result(timeout=10), flush=True)
"""


def test_a_script_ends_at_once_and_its_lingering_task_process_with_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "linger.done").exists()  # the script did not wait for the thread
    task = int(result.stdout.strip())
    assert wait_for(lambda: not alive(task))


def test_shutdown_ends_the_processes_a_runner_started(tmp_path: Path) -> None:
    from opus_core.runners import ProcessRunner

    runner = ProcessRunner()
    lingering = runner.submit(_leave_a_thread)
    pid = lingering.get_result(timeout=10)
    running = runner.submit(time.sleep, 60)
    runner.shutdown(wait=True)  # what sent its result and lingers goes
    assert wait_for(lambda: not alive(pid))
    assert running.is_running() and alive(running.pid)
    runner.shutdown(wait=False)  # everything goes
    assert wait_for(lambda: not alive(running.pid))


def _leave_a_thread() -> int:
    import threading

    threading.Thread(target=time.sleep, args=(60,)).start()
    return os.getpid()


STUCK = """
import os
import threading
from opus_core import TaskProcessor


class Stuck(TaskProcessor):
    kind = "Stuck"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with open("stuck.started.partial", "w") as marker:
            marker.write(str(os.getpid()))
        os.replace("stuck.started.partial", "stuck.started")
        finished = os.path.abspath("stuck.finished")
        threading.Event().wait(60)  # a thread cannot be killed
        open(finished, "w").close()
"""


def stuck_project(root: Path, timeout: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stuck.py").write_text(STUCK)
    (root / "opus.toml").write_text(
        '[opus]\nrunner = "threadpool"\nprocessors = ["stuck:Stuck"]\n\n'
        f'[[tasks]]\nkind = "Stuck"\nversion = "v1"\nmetadata = {{ name = "stuck"{timeout} }}\n'
    )
    return root


def test_a_timed_out_thread_does_not_keep_opus_running(tmp_path: Path) -> None:
    root = stuck_project(tmp_path, ", timeout = 0.3")
    result = opus("run", cwd=root, timeout=90, process=True)
    assert not (root / "stuck.finished").exists()  # opus ended before its thread
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "1 timed_out" in result.stdout
    assert "1 task thread(s) that cannot be killed were still running" in result.stderr


def test_ctrl_c_with_a_stuck_thread_exits_at_once_without_a_traceback(tmp_path: Path) -> None:
    root = stuck_project(tmp_path, "")
    process = interruptible([str(OPUS), "run"], cwd=root, env=environment(root))
    started(root / "stuck.started")  # the run is under way, its task stuck
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 130, (stdout, stderr)
    assert "1 cancelled" in stdout and "Traceback" not in stderr


def test_a_task_ignoring_sigio_still_dies_with_a_killed_opus(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        TWO_SLEEPERS.replace(
            'spec = { pidfile = "slow.pid", grandchild = "sleeper.pid" }',
            'spec = { pidfile = "slow.pid", ignore_sigio = true }',
        ),
    )
    process = subprocess.Popen(
        [str(OPUS), "run"],
        cwd=root,
        env=environment(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    task = started(root / "slow.pid")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert wait_for(lambda: not alive(task)), "the task process outlived opus"


def test_a_pool_inside_a_task_ends_without_a_traceback(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        """
        [[tasks]]
        kind = "Sleepy"
        version = "v1"
        metadata = { name = "pooled" }
        spec = { pidfile = "pooled.pid", pool = true, seconds = 0 }
        """,
    )
    result = opus("run", cwd=root, timeout=60, process=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr


UNFINISHED = """
import os, time
from pathlib import Path
from opus_core import task


@task
def forever():
    Path("forever.pid.partial").write_text(str(os.getpid()))
    os.replace("forever.pid.partial", "forever.pid")  # whole when it appears
    done = Path("forever.done").absolute()
    time.sleep(60)
    done.touch()


run = forever()
while not Path("forever.pid").exists():
    time.sleep(0.02)
"""


def test_a_script_that_ends_with_a_task_still_running_ends_at_once_and_so_does_the_task(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNFINISHED],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "forever.done").exists()  # the script did not wait for its task
    task = int((tmp_path / "forever.pid").read_text())
    assert wait_for(lambda: not alive(task))


def test_two_signals_at_once_still_stop_cleanly_with_the_summary(tmp_path: Path) -> None:
    root = stuck_project(tmp_path, "")
    process = interruptible([str(OPUS), "run"], cwd=root, env=environment(root))
    started(root / "stuck.started")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 143, (stdout, stderr)
    assert "1 cancelled" in stdout and "Traceback" not in stderr


OUT_OF_FILES = """
import resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from opus_core import OpusError, task


@task
def sleepy():
    time.sleep(1)


runs = []
try:
    for _ in range(200):
        runs.append(sleepy())
except OpusError as exc:
    print(exc)
"""


def test_running_out_of_file_descriptors_is_a_clear_error_and_exit_is_clean(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OUT_OF_FILES],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "too many open files with" in result.stdout and "ulimit -n" in result.stdout
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
