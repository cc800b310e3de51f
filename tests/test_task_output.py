"""What each attempt prints and logs is kept in the run history: on every runner, capped,
shown by `opus runs show --output`, and put back as it was when the run ends."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import pytest
from cli_helpers import opus
from harness import Harness

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks
from opus_core.capture import KEEP
from opus_core.command_tasks import CommandProcessor
from opus_core.history import find_run
from opus_core.html_report import report_data
from opus_core.persistence.sqlite import SqlitePersistence


def outputs(tasks: Tasks, run_id: str | None, name: str) -> list[dict[str, str] | None]:
    """The output of each attempt of the task `name`, as the run history keeps it."""
    run = find_run(tasks.state_persistence, run_id or "latest")
    [entry] = [t for t in run["tasks"] if t["name"] == name]
    return [attempt.get("output") for attempt in entry["attempt_log"]]


@pytest.mark.parametrize("runner", ["sequential", "threadpool", "process", "processpool"])
def test_each_attempt_keeps_its_stdout_stderr_and_log_lines_on_every_runner(
    runner: str, tmp_path: Path
) -> None:
    h = Harness(tmp_path, runner)
    h.add("flaky", spec={"say": "hi", "fail_attempts": 1}, retries=1)
    h.add("quiet")
    report = h.run()
    assert report.ok, report.summary()
    first, second = outputs(h.tasks, report.run_id, "flaky")
    for number, output in ((1, first), (2, second)):
        assert output is not None
        assert output["stdout"] == f"out: hi (attempt {number})\n"  # log lines are not in it
        assert output["stderr"] == f"err: hi (attempt {number})\n"
        log = output["log"].splitlines()
        assert [line.split(" ", 1)[1] for line in log] == [
            f"WARNING opus log: hi (attempt {number})",
            f"WARNING scripted: python log: hi (attempt {number})",
        ]
        assert list(output) == ["stdout", "stderr", "log"]
    assert outputs(h.tasks, report.run_id, "quiet") == [None]


class Flood(TaskProcessor):
    """Prints `spec.megabytes` MB between a first and a last line."""

    kind = "Flood"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        print("FIRST")
        chunk = "y" * 1_000_000
        for _ in range(task.spec["megabytes"]):
            sys.stdout.write(chunk)
        print("\nLAST")
        return {}


def test_a_task_printing_50_mb_keeps_its_head_and_tail_and_little_memory_or_disk(
    tmp_path: Path,
) -> None:
    database = tmp_path / "state.db"
    tasks = Tasks(
        logger=LoggerWrapper("CRITICAL"), state_persistence=SqlitePersistence(path=database)
    )
    tasks.register_task_processor(Flood())
    tasks.add_task(Task("Flood", "v1", {"megabytes": 50}, {"name": "flood"}))
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        tracemalloc.start()
        try:
            report = tasks.process_context()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert report.ok, report.summary()
    assert peak < 8_000_000  # a 1 MB chunk at a time, and KEEP characters kept
    [output] = outputs(tasks, report.run_id, "flood")
    assert output is not None
    text = output["stdout"]
    dropped = len("FIRST\n") + 50_000_000 + len("\nLAST\n") - KEEP
    assert text.startswith("FIRST\nyyy") and text.endswith("yyy\nLAST\n")
    assert f"\n[... {dropped:,} characters dropped ...]\n" in text
    assert len(text) < KEEP + 100
    assert database.stat().st_size < 1_000_000


def test_an_attempt_that_timed_out_keeps_what_it_printed_before(tmp_path: Path) -> None:
    release = tmp_path / "release"
    h = Harness(tmp_path, "threadpool")
    h.add("stuck", spec={"say": "working", "release": str(release)}, timeout=0.2)
    try:
        report = h.run()
    finally:
        release.touch()  # the thread, still waiting, goes on to its end
    assert report["stuck"].status == "timed_out"
    [output] = outputs(h.tasks, report.run_id, "stuck")
    assert output is not None and output["stdout"] == "out: working (attempt 1)\n"


def test_the_run_puts_back_the_streams_and_logging_as_they_were(tmp_path: Path) -> None:
    def state() -> tuple[object, ...]:
        root = logging.getLogger()
        return sys.stdout, sys.stderr, list(root.handlers), logging.getLogRecordFactory()

    before = state()
    h = Harness(tmp_path)
    h.add("talk", spec={"say": "hello"})
    assert h.run().ok
    assert state() == before


def test_output_beyond_the_pages_budget_is_left_out_saying_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opus_core.html_report as html_report

    h = Harness(tmp_path)
    for name in ("a", "b", "c"):
        h.add(name, spec={"say": name * 40})
    report = h.run()
    run = find_run(h.tasks.state_persistence, report.run_id or "latest")
    whole = report_data(run)
    assert [t["output"][0][:2] for t in whole["tasks"]] == [[1, "stdout"]] * 3
    assert whole["run"]["output_left_out"] == 0
    size = sum(len(text) for _, _, text in whole["tasks"][0]["output"])
    monkeypatch.setattr(html_report, "OUTPUT_BUDGET", 2 * size)
    cut = report_data(run)
    assert [("output" in t, t.get("output_left_out", False)) for t in cut["tasks"]] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    assert cut["run"]["output_left_out"] == 1


PROCESSORS = """
import logging
from opus_core import TaskProcessor


class Talk(TaskProcessor):
    kind = "Talk"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        print("plain line")
        print("\\x1b[31mred\\x1b[0m and a bell \\x07")
        logging.getLogger("talk").warning("nobody handles this record")
        if task.spec.get("fail"):
            raise RuntimeError("talked too much")
        return {}
"""

CONFIG = """
[opus]
runner = "process"
processors = ["talk:Talk"]

[[tasks]]
kind = "Talk"
version = "v1"
metadata = { name = "talker", retries = 1, retry_sleep_time = 0 }
spec = { fail = true }

[[tasks]]
kind = "Command"
version = "v1"
metadata = { name = "shell" }
spec = { run = "echo from the shell; echo to stderr >&2" }
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "talk.py").write_text(textwrap.dedent(PROCESSORS))
    (tmp_path / "opus.toml").write_text(CONFIG)
    return tmp_path


def test_opus_runs_show_output_prints_each_attempts_streams_as_text(project: Path) -> None:
    # A real process: Python's own logging defaults (a record no handler takes goes to
    # stderr) are what this is about, and a test run has handlers of pytest's.
    ran = opus("run", cwd=project, process=True)
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.count("nobody handles this record") == 2  # still shown, once per attempt

    shown = opus("runs", "show", "latest", "talker", "--output", cwd=project)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.index("attempt 1 (failed): stdout") < text.index("attempt 2 (failed): stdout")
    assert "plain line" in text
    assert "\\x1b[31mred\\x1b[0m and a bell \\x07" in text  # escapes shown, not obeyed
    assert "\x1b" not in text and "\x07" not in text
    assert "WARNING talk: nobody handles this record" in text
    stderr = text.split("attempt 1 (failed): stderr")[1].split("attempt 1 (failed): log")[0]
    assert "\nnobody handles this record\n" in stderr  # as Python wrote it there

    everything = opus("runs", "show", "--output", cwd=project)
    assert " output of talker " in everything.stdout
    assert " output of shell " in everything.stdout
    assert "INFO    shell: from the shell" in everything.stdout
    assert "INFO    shell: to stderr" in everything.stdout

    as_json = json.loads(opus("runs", "show", "--json", cwd=project).stdout)
    talker = next(t for t in as_json["tasks"] if t["name"] == "talker")
    assert [a["output"]["stdout"].splitlines()[0] for a in talker["attempt_log"]] == [
        "plain line",
        "plain line",
    ]


def test_a_task_that_printed_nothing_says_so(project: Path) -> None:
    (project / "opus.toml").write_text(
        '[[tasks]]\nkind = "Command"\nversion = "v1"\nmetadata = { name = "silent" }\n'
        'spec = { run = "true" }\n'
    )
    assert opus("run", cwd=project).returncode == 0
    shown = opus("runs", "show", "latest", "silent", "--output", cwd=project)
    assert shown.stdout.rstrip().endswith("it printed and logged nothing")
    whole = opus("runs", "show", "--output", cwd=project)
    assert whole.stdout.rstrip().endswith("no task printed or logged anything")


CONFIGURES = """
import logging
from opus_core import TaskProcessor


class Configures(TaskProcessor):
    kind = "Configures"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        logging.basicConfig(level=logging.INFO, format="BC %(levelname)s %(name)s %(message)s")
        logging.getLogger("app").info("configured by the task")
        logging.warning("through the module's function")
        return {}
"""


def test_logging_set_up_inside_a_task_works_as_it_does_without_opus(tmp_path: Path) -> None:
    # A real process: `basicConfig` does something only where the root logger has no
    # handler, and in a test run pytest's are there.
    (tmp_path / "configures.py").write_text(CONFIGURES)
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["configures:Configures"]\n\n'
        '[[tasks]]\nkind = "Configures"\nversion = "v1"\nmetadata = { name = "setup" }\n'
    )
    ran = opus("run", cwd=tmp_path, process=True)
    assert ran.returncode == 0, ran.stderr
    assert "BC INFO app configured by the task" in ran.stderr
    assert "BC WARNING root through the module's function" in ran.stderr
    shown = opus("runs", "show", "latest", "setup", "--output", cwd=tmp_path).stdout
    assert "INFO    app: configured by the task" in shown
    assert "WARNING root: through the module's function" in shown


def test_a_commands_output_is_kept_also_where_the_log_level_hides_it() -> None:
    tasks = Tasks(logger=LoggerWrapper("WARNING"))
    tasks.register_task_processor(CommandProcessor())
    tasks.add_task(
        Task("Command", "v1", {"run": "echo made it; echo careful >&2; exit 3"}, {"name": "sh"})
    )
    report = tasks.process_context()
    assert report["sh"].status == "failed"
    [output] = outputs(tasks, report.run_id, "sh")
    assert output is not None
    lines = [line.split(" ", 1)[1] for line in output["log"].splitlines()]
    assert sorted(lines) == ["INFO    sh: careful", "INFO    sh: made it"]  # two readers


def test_a_run_keeps_what_its_tasks_print_where_the_program_set_stdout_during_another_run() -> None:
    """Two runs at once in one process: the second starts inside `redirect_stdout`, set while
    the first runs; what its task prints is kept, and reaches the program's stream too."""
    started, release = threading.Event(), threading.Event()

    class Hold(TaskProcessor):
        kind = "Hold"

        def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
            started.set()
            release.wait(60)
            return {}

    class Say(TaskProcessor):
        kind = "Say"

        def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
            print("hello from the second run")
            return {}

    first, second = Tasks(logger=LoggerWrapper("ERROR")), Tasks(logger=LoggerWrapper("ERROR"))
    first.register_task_processor(Hold)
    second.register_task_processor(Say)
    first.add_task(Task("Hold", "v1", metadata={"name": "hold"}))
    second.add_task(Task("Say", "v1", metadata={"name": "say"}))
    holding = threading.Thread(target=first.process_context)
    holding.start()
    try:
        assert started.wait(60)
        with contextlib.redirect_stdout(io.StringIO()) as program:
            report = second.process_context()
    finally:
        release.set()
        holding.join(60)
    assert report.ok
    assert outputs(second, report.run_id, "say") == [{"stdout": "hello from the second run\n"}]
    assert program.getvalue() == "hello from the second run\n"
