"""What a user sees of `opus run`, and of task processes' output, at the terminal and
in redirected output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import OPUS, interruptible, opus

EXITING = """
import sys
from opus_core import TaskProcessor


def give_up(code):
    print("about to give up")
    sys.exit(code)


class Exiting(TaskProcessor):
    kind = "Exiting"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        give_up(3)
"""


@pytest.mark.parametrize("runner", ["sequential", "process"])
@pytest.mark.parametrize("tb", ["short", "long"])
def test_a_processor_calling_sys_exit_shows_its_own_lines(
    tmp_path: Path, runner: str, tb: str
) -> None:
    (tmp_path / "exiting.py").write_text(EXITING)
    (tmp_path / "opus.toml").write_text(
        f'[opus]\nrunner = "{runner}"\nprocessors = ["exiting:Exiting"]\n'
        '[[tasks]]\nkind = "Exiting"\nversion = "v1"\nmetadata = { name = "quitter" }\n'
    )
    result = opus("run", f"--tb={tb}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "raised SystemExit(3)" in result.stdout
    failures = result.stdout[result.stdout.index("FAILURES") :]
    assert "in give_up" in failures and "sys.exit(code)" in failures, failures
    assert "give_up(3)" in failures, failures


SLEEPY = """
import time
from pathlib import Path
from opus_core import TaskProcessor


class Sleepy(TaskProcessor):
    kind = "Sleepy"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        Path(f"started-{task.task_id}").write_text("")
        time.sleep(60)
"""


def test_ctrl_c_says_in_one_line_how_many_tasks_were_cancelled(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    tasks = "".join(
        f'[[tasks]]\nkind = "Sleepy"\nversion = "v1"\nmetadata = {{ name = "t{i:02}" }}\n'
        for i in range(20)
    )
    (tmp_path / "opus.toml").write_text(
        '[opus]\nrunner = "process"\nprocessors = ["sleepy:Sleepy"]\n'
        "[runners.process]\nmax_workers = 2\n" + tasks
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / ".user")
    env["XDG_STATE_HOME"] = str(tmp_path / ".state")
    proc = interruptible([str(OPUS), "run"], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "20 cancelled" in out and "(interrupted)" in out
    cancelled = [line for line in err.splitlines() if "cancelled" in line]
    assert len(cancelled) == 2, err  # the count, and the summary of the run
    assert "WARNING 20 task(s) cancelled" in cancelled[0], err
    assert "run finished: 20 cancelled" in cancelled[1], err
    assert "Traceback" not in err


PRINTING = """
import sys
from opus_core import TaskProcessor


class Printing(TaskProcessor):
    kind = "Printing"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        for i in range(3000):
            print(f"{task.task_id} line {i} " + "x" * 80)
        return {}
"""


@pytest.mark.parametrize("runner", ["sequential", "threadpool", "process", "processpool"])
def test_a_run_piped_into_head_ends_quietly_and_its_tasks_succeed(
    tmp_path: Path, runner: str
) -> None:
    (tmp_path / "printing.py").write_text(PRINTING)
    tasks = "".join(
        f'[[tasks]]\nkind = "Printing"\nversion = "v1"\nmetadata = {{ name = "p{i}" }}\n'
        for i in range(3)
    )
    (tmp_path / "opus.toml").write_text(
        f'[opus]\nrunner = "{runner}"\nprocessors = ["printing:Printing"]\n' + tasks
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / ".user")
    env["XDG_STATE_HOME"] = str(tmp_path / ".state")
    pipeline = subprocess.run(
        f"'{OPUS}' run 2>stderr.txt | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    stderr = (tmp_path / "stderr.txt").read_text()
    assert pipeline.returncode == 0, stderr
    assert pipeline.stdout.startswith("p") and pipeline.stdout.count("\n") == 1, pipeline.stdout
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert "run finished: 3 succeeded" in stderr, stderr


SCRIPT = """
import sys
from opus_core import task


@task
def chatty():
    print("a whole line")
    print("to stderr", file=sys.stderr)
    sys.stdout.write("a line without its end")
    return 42


print(chatty().get_result())
"""


def test_a_task_process_writes_to_the_scripts_own_output(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a whole line\na line without its end42\n"
    assert result.stderr == "to stderr\n"


FLOOD = """
import resource, sys
from opus_core import task

MB = 1024 * 1024


@task
def flood(lines):
    chunk = "y" * (MB - 1) + "\\n" if lines else "z" * MB
    for _ in range(50):
        sys.stdout.write(chunk)
    return "done"


before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = [flood(True).get_result(), flood(False).get_result()]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(results, grown // 1024, file=sys.stderr)
"""


def test_a_task_printing_50_mb_is_streamed_through(tmp_path: Path) -> None:
    (tmp_path / "flood.py").write_text(FLOOD)
    with open(tmp_path / "out.txt", "wb") as out:
        result = subprocess.run(
            [sys.executable, "flood.py"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    results, grown_mb = result.stderr.rsplit("]", 1)
    assert results == "['done', 'done'", result.stderr
    assert int(grown_mb) < 40, f"opus held the output in memory: {grown_mb} MB more"
    size = (tmp_path / "out.txt").stat().st_size
    assert size == 100 * 1024 * 1024
