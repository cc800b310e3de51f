"""A plugin that hangs or ends the process while it is imported can be named: Ctrl-C names it,
and `OPUS_TRACE_PLUGINS=1` prints each plugin before its import."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from cli_helpers import OPUS, interruptible, make_distribution, opus

LOOPS = """
from pathlib import Path

Path(__file__).with_name("importing").write_text("yes")
while True:
    pass
"""


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def environment(tmp_path: Path, site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env.update(PYTHONPATH=str(site), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return env


def test_ctrl_c_while_a_plugin_loops_at_import_names_the_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(site, "looping-plugin", "looping_plugin", LOOPS, entry_point="looper")
    env = environment(tmp_path, site)
    for command in (["plugins", "list"], ["run"]):
        (site / "importing").unlink(missing_ok=True)
        started = interruptible([str(OPUS), *command], cwd=tmp_path, env=env)
        wait_for(site / "importing")
        started.send_signal(signal.SIGINT)
        _, stderr = started.communicate(timeout=60)
        assert started.returncode == 130, stderr
        assert stderr.splitlines()[-1] == (
            "opus: interrupted while importing plugin 'looper' (looping_plugin); "
            "`[opus] disable_plugins = ['looper']` leaves it out"
        ), stderr


def test_a_plugin_that_ends_the_process_at_import_is_the_last_plugin_traced(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    make_distribution(site, "exiting-plugin", "exiting_plugin", "import os\nos._exit(9)\n")
    result = opus(  # a process: the plugin ends it
        "plugins",
        "list",
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "OPUS_TRACE_PLUGINS": "1"},
        process=True,
    )
    assert result.returncode == 9
    assert result.stderr.splitlines()[-1] == (
        "opus: trace: importing plugin 'exiting_plugin' (exiting_plugin)"
    ), result.stderr
