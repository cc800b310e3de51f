"""The progress line of `opus run` on a real pseudo-terminal, and the log lines around it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from cli_helpers import opus, opus_on_a_terminal

CHATTY = """
import logging, sys, time
from opus_core import TaskProcessor


class Chatty(TaskProcessor):
    kind = "Chatty"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        for i in range(3):
            self.logger.info(f"{task.task_id} says hello {i}")
            print(f"{task.task_id} prints {i}")
            print(f"{task.task_id} writes to stderr {i}", file=sys.stderr)
            time.sleep(0.01)
        if task.spec.get("fail"):
            raise RuntimeError(f"{task.task_id} gives up")
        return {}
"""

PROGRESS = re.compile(r"\[\d+/\d+\] running \d+, failed \d+")


def project(root: Path, runner: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "chatty.py").write_text(CHATTY)
    tasks = "".join(
        f'\n[[tasks]]\nkind = "Chatty"\nversion = "v1"\nmetadata = {{ name = "t{i}" }}\n'
        + ("spec = { fail = true }\n" if i == 5 else "")
        for i in range(8)
    )
    (root / "opus.toml").write_text(
        f'[opus]\nrunner = "{runner}"\nprocessors = ["chatty:Chatty"]\n'
        f"[runners.{runner}]\nmax_workers = 4\n" + tasks
        if runner == "threadpool"
        else f'[opus]\nrunner = "{runner}"\nprocessors = ["chatty:Chatty"]\n' + tasks
    )
    return root


def screen_lines(output: str) -> list[str]:
    """What each line of the terminal shows at the end: after a carriage return and an
    erase (`\\r\\033[K`), only what follows stays visible."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        visible = raw.split("\r")[-1].replace("\033[K", "")
        lines.append(visible)
    return lines


@pytest.mark.parametrize("runner", ["threadpool", "process", "processpool"])
def test_log_lines_and_the_progress_line_never_share_a_screen_line(
    tmp_path: Path, runner: str
) -> None:
    root = project(tmp_path, runner)
    status, output = opus_on_a_terminal("run", cwd=root)
    assert status == 1, output
    shown = screen_lines(output)
    said = [line for line in shown if "says hello" in line or "prints" in line or "stderr" in line]
    assert len(said) == 8 * 3 * 3, output  # every line of every task arrived whole
    for line in said:
        assert not PROGRESS.search(line), f"a log line shares the screen with progress: {line!r}"
        assert re.fullmatch(r"(\S+ INFO\s+)?t\d (says hello|prints|writes to stderr) \d", line), (
            line
        )
    assert PROGRESS.search(output)  # the line was drawn
    # what succeeded is shown by the line, not logged; what failed still is
    assert not any("succeeded in" in line for line in shown)
    assert any("task 't5' failed: RuntimeError: t5 gives up" in line for line in shown)
    # what a task printed comes before what opus says of its end
    last_words = next(i for i, line in enumerate(shown) if line.endswith("t5 writes to stderr 2"))
    end = next(i for i, line in enumerate(shown) if "task 't5' failed" in line)
    assert last_words < end, output


def test_no_progress_and_log_levels(tmp_path: Path) -> None:
    root = project(tmp_path, "sequential")
    status, output = opus_on_a_terminal("run", "--no-progress", cwd=root)
    assert status == 1 and not PROGRESS.search(output)
    assert "task 't0' succeeded in" not in output  # counted, not listed: -v lists them
    quiet = opus("run", "-q", cwd=root)
    assert "says hello" not in quiet.stderr and "task 't5' failed" in quiet.stderr
    verbose = opus("run", "-v", cwd=root)
    assert "task 't0' started (attempt 1)" in verbose.stderr
    level = opus("run", "--log-level", "error", cwd=root)
    assert "says hello" not in level.stderr and "task 't5' failed" in level.stderr
    both = opus("run", "-q", "-v", cwd=root)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_nothing_is_drawn_off_a_terminal(tmp_path: Path) -> None:
    result = opus("run", cwd=project(tmp_path, "sequential"))
    assert not PROGRESS.search(result.stdout + result.stderr)
    assert "\r" not in result.stdout + result.stderr
    assert textwrap.dedent(result.stdout).count("t0") >= 1


BYTES = """
import sys
from opus_core import TaskProcessor


class Bytes(TaskProcessor):
    kind = "Bytes"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        sys.stdout.buffer.write(b"raw bytes line\\n")
        sys.stdout.flush()
        sys.stdout.write("no newline at the end")
        return {}
"""


def test_a_task_writing_bytes_or_a_partial_line_works_on_a_terminal(tmp_path: Path) -> None:
    for runner in ("threadpool", "process", "processpool"):
        root = tmp_path / runner
        root.mkdir()
        (root / "bytes_task.py").write_text(BYTES)
        (root / "opus.toml").write_text(
            f'[opus]\nrunner = "{runner}"\nprocessors = ["bytes_task:Bytes"]\n'
            '[[tasks]]\nkind = "Bytes"\nversion = "v1"\nmetadata = { name = "b" }\n'
        )
        status, output = opus_on_a_terminal("run", cwd=root)
        assert status == 0, output
        assert "raw bytes line" in output and "no newline at the end" in output, output


def test_a_failed_run_piped_into_head_still_exits_1(tmp_path: Path) -> None:
    import subprocess

    from cli_helpers import OPUS

    root = project(tmp_path, "sequential")
    pipeline = subprocess.run(
        f"'{OPUS}' run 2>/dev/null | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pipeline.returncode == 1, pipeline.stdout
