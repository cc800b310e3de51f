"""The colorlog logger: colour on a terminal, plain text elsewhere or under NO_COLOR."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import one_line_error, opus, opus_on_a_terminal
from opus_plugin_colorlog import ColorLogger

from opus_core import Tasks
from opus_core.plugin.manager import PluginManager

ESC = "\x1b["

PROCESSORS = """
from opus_core import TaskProcessor

class Flaky(TaskProcessor):
    kind = "Flaky"
    attempts = 0
    def process_task(self, task, command, context, key_value_store, state_persistence):
        type(self).attempts += 1
        if task.spec.get("always_fail") or type(self).attempts == 1:
            raise RuntimeError("flaked")
"""

CONFIG = """
[opus]
logger = "colorlog"
processors = ["colorlog_procs:Flaky"]

[[tasks]]
kind = "Flaky"
version = "v1"
metadata = { name = "flaky-one", retries = 1 }

[[tasks]]
kind = "Flaky"
version = "v1"
metadata = { name = "broken" }
spec = { always_fail = true }
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "colorlog_procs.py").write_text(PROCESSORS)
    (tmp_path / "opus.toml").write_text(CONFIG)
    return tmp_path


def run_on_a_terminal(cwd: Path, env: dict[str, str]) -> str:
    return opus_on_a_terminal("run", cwd=cwd, env=env)[1]


def test_registered_through_its_entry_point() -> None:
    assert PluginManager().registry("loggers")["colorlog"] is ColorLogger


def test_colours_on_a_terminal(tmp_path: Path) -> None:
    output = run_on_a_terminal(project(tmp_path), {})
    assert f"{ESC}" in output
    assert f"task {ESC}1;36m'flaky-one'" in output  # task names highlighted
    retry = next(line for line in output.splitlines() if "retrying in" in line)
    assert f"{ESC}33m" in retry  # WARNING in yellow
    failure = next(
        line
        for line in output.splitlines()
        if "task" in line and "'broken'" in line and "failed" in line
    )
    assert f"{ESC}31m" in failure  # ERROR in red
    summary = next(line for line in output.splitlines() if "run finished" in line)
    assert f"{ESC}1m" in summary  # the summary in bold


def test_no_color_gives_plain_text_on_a_terminal(tmp_path: Path) -> None:
    output = run_on_a_terminal(project(tmp_path), {"NO_COLOR": "1"})
    segments = output.replace("\r\n", "\n").replace("\x1b[K", "").replace("\r", "\n").splitlines()
    log_lines = [line for line in segments if "task 'flaky-one'" in line]
    assert log_lines and all(ESC not in line for line in log_lines)
    assert any(line.startswith("WARNING  task 'flaky-one' attempt 1 failed") for line in log_lines)


def test_plain_text_when_not_a_terminal(tmp_path: Path) -> None:
    result = opus("run", cwd=project(tmp_path))
    assert result.returncode == 1
    assert ESC not in result.stdout + result.stderr
    assert "ERROR    task 'broken' failed: RuntimeError: flaked" in result.stderr


def test_level_and_format_options(tmp_path: Path, capsys) -> None:
    (tmp_path / "colorlog_procs.py").write_text(PROCESSORS)
    (tmp_path / "opus.toml").write_text(
        CONFIG.replace('logger = "colorlog"', 'logger = "colorlog"\nlog_level = "DEBUG"')
        + '\n[loggers.colorlog]\nlevel = "ERROR"\nformat = "[%(levelname)s] %(message)s"\n'
    )
    tasks = Tasks.from_config(tmp_path / "opus.toml")
    assert isinstance(tasks.logger, ColorLogger)
    tasks.process_context()
    out = capsys.readouterr().out
    assert "[ERROR] task 'broken' failed" in out
    assert "WARNING" not in out and "[INFO]" not in out


def test_a_format_that_cannot_format_a_line_is_a_config_error_naming_the_section(
    tmp_path: Path,
) -> None:
    # issue 14, item 15: checked when the logger is made, not on every line of the run
    for bad, reason in [
        ("%(task)s %(message)s", "Formatting field not found in record: 'task'"),
        ("%(message)d", "%d format"),
        ("%(message)s %", "incomplete format"),
    ]:
        project(tmp_path)
        with (tmp_path / "opus.toml").open("a") as f:
            f.write(f'\n[loggers.colorlog]\nformat = "{bad}"\n')
        result = opus("run", cwd=tmp_path)
        error = one_line_error(result)
        assert error.startswith(f"opus: error: {tmp_path / 'opus.toml'}: loggers.colorlog: "), error
        assert f"format {bad!r} cannot format a log line" in error and reason in error, error
        assert "Logging error" not in result.stdout + result.stderr


def test_formats_with_colours_and_record_attributes_are_accepted(tmp_path: Path) -> None:
    project(tmp_path)
    with (tmp_path / "opus.toml").open("a") as f:
        f.write(
            '\n[loggers.colorlog]\nformat = "%(asctime)s %(bold_red)s%(log_color)s'
            '%(levelname)-8s%(reset)s %(name)s: %(message)s"\n'
        )
    result = opus("run", cwd=tmp_path)
    assert result.returncode == 1  # the 'broken' task fails, as it should
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
    assert "ERROR    opus.colorlog: task 'broken' failed: RuntimeError: flaked" in result.stderr
