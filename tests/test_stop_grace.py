"""One SIGTERM (or Ctrl-C) is enough: if stopping hangs — a plugin's hook that blocks, called
again for the task the stop cancels — `opus run` ends after a bounded grace, naming what it
was waiting for."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from cli_helpers import OPUS, interruptible, make_distribution

BLOCKS = """
import threading
from pathlib import Path

from opus_core import hookimpl


@hookimpl
def opus_task_finished(task, result):
    Path("hook.entered").write_text("yes")
    threading.Event().wait()  # never returns
"""

PROJECT = """
[opus]
persistence = "memory"
processors = ["quick:Quick"]

[[tasks]]
kind = "Quick"
version = "v1"
metadata = { name = "quick" }

[[tasks]]
kind = "Quick"
version = "v1"
metadata = { name = "after", dependencies = ["quick"] }
"""

QUICK = """
from opus_core import TaskProcessor


class Quick(TaskProcessor):
    kind = "Quick"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return {"done": True}
"""


@pytest.mark.parametrize(("sent", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_one_signal_ends_a_run_whose_hook_blocks_naming_the_hook(
    tmp_path: Path, sent: signal.Signals, status: int
) -> None:
    site = tmp_path / "site"
    make_distribution(site, "blocking-plugin", "blocking_plugin", BLOCKS, entry_point="blocker")
    root = tmp_path / "project"
    root.mkdir()
    (root / "opus.toml").write_text(PROJECT)
    (root / "quick.py").write_text(QUICK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env.update(PYTHONPATH=str(site), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env["OPUS_STOP_GRACE"] = "1"
    opus = interruptible([str(OPUS), "run"], cwd=root, env=env)
    deadline = time.monotonic() + 60
    while not (root / "hook.entered").exists():
        assert time.monotonic() < deadline, "the hook never ran"
        time.sleep(0.01)
    opus.send_signal(sent)  # one signal, and no other
    _, stderr = opus.communicate(timeout=60)
    assert opus.returncode == status, stderr
    assert stderr.splitlines()[-1] == (
        "opus: still stopping after 1s, waiting for plugin 'blocker' in opus_task_finished; "
        "exiting without finishing the clean-up"
    ), stderr
