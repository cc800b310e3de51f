"""The worked example of docs/runners.md — each task in a fresh `python` process — keeps the
runner contract and works under `opus run`: timeouts, SIGTERM, no process left behind; and a
third-party runner's slow `halt()` has returned before `opus run` exits."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import OPUS, interruptible

from opus_core.testing import OpusProject, RunnerContract
from opus_core.testing.runner import PATIENCE

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "subprocess_runner"
sys.path.insert(0, str(EXAMPLE))

import opus_subprocess_runner  # noqa: E402
from opus_subprocess_runner import SubprocessRunner  # noqa: E402


class TestSubprocessRunner(RunnerContract):
    runner_class = SubprocessRunner


def wait_for(path: Path) -> str:
    deadline = time.monotonic() + PATIENCE
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    return path.read_text()


def gone(pid: int) -> bool:
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


@pytest.fixture
def project(opus_project: OpusProject) -> OpusProject:
    opus_project.register(opus_subprocess_runner, name="subprocess")
    opus_project.write("slow_processor.py", (EXAMPLE / "slow_processor.py").read_text())
    return opus_project


def test_the_example_configuration_runs_both_tasks(project: OpusProject) -> None:
    project.write_config((EXAMPLE / "opus.toml").read_text())
    result = project.run("run")
    assert result.returncode == 0, result.stderr
    assert "2 succeeded" in result.stdout


def slow_task(project: OpusProject, metadata: str) -> Path:
    """Configure one task, `slow`, that sleeps for ten minutes on the subprocess runner,
    with `metadata` added; the file its process id will be written to."""
    pid_file = project.path / "slow.pid"
    project.write_config(
        f"""
        [opus]
        runner = "subprocess"
        processors = ["slow_processor:Sleep"]

        [[tasks]]
        kind = "Sleep"
        version = "v1"
        metadata = {{ name = "slow"{metadata} }}
        spec = {{ seconds = 600, pid_file = "{pid_file}" }}
        """
    )
    return pid_file


def test_a_timeout_kills_the_task_process_under_opus_run(project: OpusProject) -> None:
    pid_file = slow_task(project, ", timeout = 1")
    result = project.run("run")
    assert result.returncode == 1, result.stderr
    assert "1 timed_out" in result.stdout
    assert gone(int(wait_for(pid_file)))


def test_sigterm_ends_opus_run_and_the_task_process(project: OpusProject) -> None:
    pid_file = slow_task(project, "")
    environment = dict(os.environ, **project.environment)
    environment["OPUS_PLUGINS"] = "subprocess=opus_subprocess_runner"
    environment["PYTHONPATH"] = str(EXAMPLE)
    opus = interruptible([str(OPUS), "run"], cwd=project.path, env=environment)
    task = int(wait_for(pid_file))
    opus.send_signal(signal.SIGTERM)
    stdout, stderr = opus.communicate(timeout=PATIENCE)
    assert opus.returncode == 143, (stdout, stderr)
    assert "Traceback" not in stderr
    assert gone(task)


SLOW_HALT = '''
import time
from pathlib import Path

from opus_core import hookimpl
from opus_core.runners import ProcessRunner

HALTED = Path(__file__).with_name("halted")


class SlowHaltRunner(ProcessRunner):
    """The process runner, but its halt takes a while and leaves a mark when it is done."""

    name = "slowhalt"

    def submit(self, fn, /, *args, **kwargs):
        run = super().submit(fn, *args, **kwargs)
        plain_halt = run.halt

        def halt():
            time.sleep(0.2)
            plain_halt()
            HALTED.write_text("halted")

        run.halt = halt
        return run


@hookimpl
def opus_register_runners():
    return [SlowHaltRunner]
'''


def test_a_slow_halt_has_returned_before_opus_run_exits(opus_project: OpusProject) -> None:
    opus_project.write("slow_halt_runner.py", SLOW_HALT)
    opus_project.register("slow_halt_runner", name="slowhalt")
    opus_project.write("slow_processor.py", (EXAMPLE / "slow_processor.py").read_text())
    opus_project.write_config(
        """
        [opus]
        runner = "slowhalt"
        processors = ["slow_processor:Sleep"]

        [[tasks]]
        kind = "Sleep"
        version = "v1"
        metadata = { name = "slow", timeout = 1 }
        spec = { seconds = 30 }
        """
    )
    result = opus_project.run("run")
    assert result.returncode == 1, result.stderr
    assert "1 timed_out" in result.stdout
    assert (opus_project.path / "halted").read_text() == "halted"
