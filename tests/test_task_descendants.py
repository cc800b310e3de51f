"""What a task starts ends with it, on the runners that give a task a process: when the task
returns, when it is stopped or times out — in its process group or in a session of its own."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cli_helpers import opus
from test_process_lifetime import alive, wait_for

STARTS = """
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
        partial.write_text(str(sleeper.pid))
        partial.replace(task.spec["pidfile"])
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
    sleeper = int((root / "sleeper.pid").read_text())
    assert gone(sleeper), f"the task's sleep {sleeper} outlived it"


@pytest.mark.parametrize("runner", ["process", "processpool"])
def test_what_a_timed_out_task_started_in_its_own_session_ends_with_it(
    tmp_path: Path, runner: str
) -> None:
    root = project(tmp_path, runner, "own_session = true, seconds = 600", ", timeout = 1")
    result = opus("run", cwd=root)
    assert result.returncode == 1 and "1 timed_out" in result.stdout, result.stderr
    sleeper = int((root / "sleeper.pid").read_text())
    assert gone(sleeper), f"the task's sleep {sleeper} outlived it"
