"""What a task starts ends with it, on the runners that give a task a process: when the task
returns, when it is stopped or times out, when opus itself is killed — in its process group or
in a session of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from cli_helpers import OPUS, opus
from harness import alive
from test_process_lifetime import wait_for

STARTS = """
import ctypes
import os
import subprocess
import time
from pathlib import Path

from opus_core import TaskProcessor


class Starts(TaskProcessor):
    kind = "Starts"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        sleeper = subprocess.Popen(
            ["sleep", "1000"], start_new_session=task.spec.get("own_session", False)
        )
        partial = Path(task.spec["pidfile"] + ".partial")
        partial.write_text(f"{sleeper.pid} {os.getpid()}")
        partial.replace(task.spec["pidfile"])
        if task.spec.get("stuck"):  # in C code, holding the GIL: no Python code runs here
            ctypes.PyDLL(None).sleep(1000)
        time.sleep(task.spec.get("seconds", 0))
        return {"started": sleeper.pid}
"""


def gone(pid: int) -> bool:
    return wait_for(lambda: not alive(pid))


def project(root: Path, runner: str, spec: str, timeout: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "starts.py").write_text(STARTS)
    (root / "opus.toml").write_text(
        textwrap.dedent(
            f"""
            [opus]
            runner = "{runner}"
            processors = ["starts:Starts"]

            [[tasks]]
            kind = "Starts"
            version = "v1"
            metadata = {{ name = "starter"{timeout} }}
            spec = {{ pidfile = "sleeper.pid", {spec} }}
            """
        )
    )
    return root


@pytest.mark.parametrize("runner", ["process", "processpool"])
@pytest.mark.parametrize("own_session", [False, True], ids=["its-group", "own-session"])
def test_what_a_finished_task_started_ends_with_it(
    tmp_path: Path, runner: str, own_session: bool
) -> None:
    root = project(tmp_path, runner, f"own_session = {str(own_session).lower()}")
    result = opus("run", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    sleeper = int((root / "sleeper.pid").read_text().split()[0])
    assert gone(sleeper), f"the task's sleep {sleeper} outlived it"


@pytest.mark.parametrize("runner", ["process", "processpool"])
def test_what_a_timed_out_task_started_in_its_own_session_ends_with_it(
    tmp_path: Path, runner: str
) -> None:
    root = project(tmp_path, runner, "own_session = true, seconds = 600", ", timeout = 1")
    result = opus("run", cwd=root)
    assert result.returncode == 1 and "1 timed_out" in result.stdout, result.stderr
    sleeper = int((root / "sleeper.pid").read_text().split()[0])
    assert gone(sleeper), f"the task's sleep {sleeper} outlived it"


@pytest.mark.parametrize("runner", ["process", "processpool"])
def test_what_a_task_started_in_its_own_session_ends_with_a_killed_opus(
    tmp_path: Path, runner: str
) -> None:
    # The task is stuck in C code holding the GIL: neither it nor a thread of its own can act.
    root = project(tmp_path, runner, "own_session = true, stuck = true")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env.update(XDG_CONFIG_HOME=str(root / ".user-config"), XDG_STATE_HOME=str(root / ".state"))
    run = subprocess.Popen(
        [str(OPUS), "run", "--no-progress"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pidfile = root / "sleeper.pid"
    started: list[int] = []
    try:
        assert wait_for(pidfile.exists), "the task did not start its sleep"
        started = [int(pid) for pid in pidfile.read_text().split()]
        sleeper, task = started
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=60)
        assert gone(task), f"the task process {task} outlived opus"
        assert gone(sleeper), f"the task's sleep {sleeper} (own session) outlived opus"
    finally:  # nothing left behind by a failure
        run.kill()
        run.wait(timeout=60)
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
