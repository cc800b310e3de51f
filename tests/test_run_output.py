"""What `opus run` shows: tracebacks, exit statuses, streams, JSON, tables that fit."""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from cli_helpers import opus

PROCESSORS = """
import time
from opus_core import TaskProcessor


def lookup(values, key):
    return values[key]


def helper(spec):
    return lookup({}, spec["missing"])


class Deep(TaskProcessor):
    kind = "Deep"
    def process_task(self, task, command, context, key_value_store, state_persistence):
        self.logger.info(f"processor says hello from {task.task_id}")
        started = time.time()
        time.sleep(task.spec.get("sleep", 0))
        if "mark" in task.spec:
            with open(task.spec["mark"], "a") as f:
                f.write(f"{started} {time.time()}\\n")
        if "missing" in task.spec:
            helper(task.spec)
        if "fail" in task.spec:
            raise RuntimeError(task.spec["fail"])
        return {task.task_id: "done"}
"""

TASKS = """
[opus]
processors = ["processors:Deep"]
{opus}

[[tasks]]
kind = "Deep"
version = "v1"
metadata = {{ name = "fetch", contexts = ["dev", "prod"] }}

[[tasks]]
kind = "Deep"
version = "v1"
metadata = {{ name = "transform", dependencies = ["fetch"], contexts = ["dev", "prod"] }}
spec = {{ missing = "the-key" }}

[[tasks]]
kind = "Deep"
version = "v1"
metadata = {{ name = "report", dependencies = ["transform"], commands = ["apply"] }}
"""


def project(tmp_path: Path, opus_section: str = "", tasks: str = TASKS) -> Path:
    (tmp_path / "processors.py").write_text(PROCESSORS)
    (tmp_path / "opus.toml").write_text(textwrap.dedent(tasks.format(opus=opus_section)))
    return tmp_path


RUNNERS = ["sequential", "process", "threadpool", pytest.param("dask", marks=pytest.mark.slow)]


# -- tracebacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_failed_task_shows_where_it_failed_in_a_failures_section(
    tmp_path: Path, runner: str
) -> None:
    root = project(tmp_path)
    result = opus("run", "--context", "dev", "--runner", runner, cwd=root)
    assert result.returncode == 1, result.stderr
    table, failures = result.stdout.split(" FAILURES ")
    assert re.search(r"transform\s+failed\s+1\s+\S+s\s+KeyError: 'the-key'", table)
    assert re.search(r"report\s+skipped", table)
    assert "_ transform (failed, 1 attempt) _" in failures
    assert "Traceback (most recent call last):" in failures
    assert 'in helper\n    return lookup({}, spec["missing"])' in failures
    assert "in lookup\n    return values[key]" in failures
    assert "opus_core" not in failures and "File" in failures  # only the task's own frames
    assert failures.rstrip().splitlines()[-1].startswith("1 succeeded, 1 failed, 1 skipped in ")
    assert "KeyError: 'the-key'\n" in failures
    assert "Traceback" not in result.stderr  # the log says it in one line
    assert "task 'transform' failed: KeyError: 'the-key'" in result.stderr


def test_tb_styles(tmp_path: Path) -> None:
    root = project(tmp_path)
    short = opus("run", "--context", "dev", cwd=root).stdout
    long = opus("run", "--context", "dev", "--tb", "long", cwd=root).stdout
    line = opus("run", "--context", "dev", "--tb=line", cwd=root).stdout
    none = opus("run", "--context", "dev", "--tb", "no", cwd=root).stdout
    # long: every frame, opus's own included; short leaves opus's own frames out
    assert "opus_core" in long and "opus_core" not in short.split(" FAILURES ")[1]
    assert "in process_task" in short and "in lookup" in short
    assert f"{root / 'processors.py'}:7: KeyError: 'the-key'" in line
    assert "FAILURES" not in line and "Traceback" not in line
    assert "FAILURES" not in none and "Traceback" not in none and "transform" in none
    assert one_usage_error(opus("run", "--tb", "full", cwd=root))


def one_usage_error(result) -> bool:  # type: ignore[no-untyped-def]
    return result.returncode == 2 and "--tb" in result.stderr and "Traceback" not in result.stderr


def test_the_traceback_is_kept_in_the_run_record(tmp_path: Path) -> None:
    root = project(tmp_path, 'persistence = "file"\n[persistence.file]\ndirectory = "state"')
    assert opus("run", "--context", "dev", "--runner", "process", cwd=root).returncode == 1
    shown = opus("state", "show", "opus-run:apply:dev:transform", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    data = record.get("state", record)
    assert data["error"] == "KeyError: 'the-key'"
    assert data["traceback"].startswith("Traceback (most recent call last):")
    assert "in lookup\n    return values[key]" in data["traceback"]
    assert "raised in the task's process" not in data["traceback"]  # the child's own text


def test_retries_pass_the_traceback_to_plugins(tmp_path: Path) -> None:
    (tmp_path / "watcher.py").write_text(
        textwrap.dedent(
            """
            import sys
            from opus_core import hookimpl

            @hookimpl
            def opus_task_retrying(task, attempt, traceback):
                sys.stderr.write(f"RETRYING {task.task_id} {attempt} {traceback.splitlines()[-1]}\\n")

            @hookimpl
            def opus_task_finished(task, result):
                if result.traceback:
                    last = result.traceback.splitlines()[-1]
                    sys.stderr.write(f"FINISHED {task.task_id} {last}\\n")
            """
        )
    )
    root = project(
        tmp_path,
        tasks=TASKS.replace('name = "transform",', 'name = "transform", retries = 1,'),
    )
    result = opus(
        "-p", "watcher", "run", "--context", "dev", cwd=root, env={"PYTHONPATH": str(root)}
    )
    assert result.returncode == 1
    assert "RETRYING transform 1 KeyError: 'the-key'" in result.stderr
    assert "FINISHED transform KeyError: 'the-key'" in result.stderr
    assert "_ transform (failed, 2 attempts) _" in result.stdout


# -- exit statuses -------------------------------------------------------------------------------


def test_nothing_in_scope_exits_5_naming_the_contexts_and_commands_in_use(tmp_path: Path) -> None:
    root = project(tmp_path, tasks=TASKS.replace('commands = ["apply"]', 'contexts = ["dev"]'))
    for args in (("--context", "prdo"), ("--command", "aply", "--context", "dev")):
        result = opus("run", *args, cwd=root)
        assert result.returncode == 5, (result.stdout, result.stderr)
        assert result.stdout == ""
        assert "nothing to run" in result.stderr
        assert "commands the tasks use: apply, delete, describe, get" in result.stderr
        assert "contexts the tasks use: dev, prod" in result.stderr
    assert "did you mean 'prod'?" in opus("run", "--context", "prdo", cwd=root).stderr
    dry = opus("run", "--dry-run", "--context", "prdo", cwd=root)
    assert dry.returncode == 5 and "nothing to run" in dry.stderr
    assert "left out: 3 task(s)" in dry.stdout


def test_a_selection_with_nothing_in_scope_exits_5(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = opus("run", "fetch", "--context", "staging", cwd=root)
    assert result.returncode == 5, (result.stdout, result.stderr)
    assert "none of the 1 selected task(s) is in scope" in result.stderr
    assert "contexts the tasks use: dev, prod" in result.stderr


def test_no_opus_toml_exits_5_suggesting_config_init(tmp_path: Path) -> None:
    result = opus("run", cwd=tmp_path)
    assert result.returncode == 5
    assert "no opus.toml" in result.stderr and "opus config init" in result.stderr
    assert opus("run", "--dry-run", cwd=tmp_path).returncode == 5


def test_exit_statuses_0_1_2(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert opus("run", "fetch", "--context", "dev", cwd=root).returncode == 0
    assert opus("run", "--context", "dev", cwd=root).returncode == 1
    assert opus("run", "--runner", "nope", cwd=root).returncode == 2


# -- streams and JSON ---------------------------------------------------------------------------


def test_logs_on_stderr_results_on_stdout(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = opus("run", "fetch", "--context", "dev", cwd=root)
    assert result.returncode == 0
    assert "processor says hello from fetch" in result.stderr
    assert "run finished: 1 succeeded" in result.stderr
    assert "hello" not in result.stdout and "INFO" not in result.stdout
    assert re.fullmatch(r"1 succeeded in \d+\.\d\ds\n", result.stdout), result.stdout


def test_results_list_what_did_not_succeed_and_v_lists_every_task(tmp_path: Path) -> None:
    root = project(tmp_path)
    shown = opus("run", "--context", "dev", cwd=root)
    assert shown.returncode == 1
    rows = {line.split()[0]: line.split()[1] for line in shown.stdout.split("=")[0].splitlines()}
    assert rows == {"TASK": "STATUS", "transform": "failed", "report": "skipped"}
    assert "FAILURES" in shown.stdout and "KeyError: 'the-key'" in shown.stdout
    assert shown.stdout.splitlines()[-1].startswith("1 succeeded, 1 failed, 1 skipped in ")
    every = opus("run", "--context", "dev", "-v", cwd=root)
    assert re.search(r"^fetch +succeeded +1 ", every.stdout, re.MULTILINE), every.stdout
    quiet = opus("run", "--context", "dev", "-q", cwd=root)
    assert "TASK" not in quiet.stdout and "STATUS" not in quiet.stdout
    assert "KeyError: 'the-key'" in quiet.stdout  # the failures and the counts stay
    assert quiet.stdout.splitlines()[-1].startswith("1 succeeded, 1 failed, 1 skipped in ")


def test_off_a_terminal_successes_are_counted_in_progress_lines(tmp_path: Path) -> None:
    root = project(tmp_path)
    counted = opus("run", "fetch", "--context", "dev", cwd=root, env={"OPUS_PROGRESS_EVERY": "0"})
    assert counted.returncode == 0, counted.stderr
    assert "INFO    progress: 1/1 done, 0 failed" in counted.stderr
    assert "task 'fetch' succeeded" not in counted.stderr
    default = opus(
        "run", "fetch", "--context", "dev", cwd=root
    )  # 10 s apart by default: none in a short run
    assert "progress:" not in default.stderr and "task 'fetch' succeeded" not in default.stderr
    listed = opus("run", "fetch", "--context", "dev", "-v", cwd=root)
    assert "task 'fetch' succeeded in " in listed.stderr and "progress:" not in listed.stderr


def test_colorlog_logs_on_stderr_too(tmp_path: Path) -> None:
    root = project(tmp_path, 'logger = "colorlog"')
    result = opus("run", "fetch", "--context", "dev", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "processor says hello from fetch" in result.stderr
    assert "hello" not in result.stdout


def test_run_json_is_the_report(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = opus("run", "--context", "dev", "--json", cwd=root)
    assert result.returncode == 1
    report = json.loads(result.stdout)  # nothing but JSON on stdout
    assert report["command"] == "apply" and report["context"] == "dev"
    assert report["ok"] is False and report["counts"]["failed"] == 1
    datetime.fromisoformat(report["started_at"])
    by_name = {t["task"]: t for t in report["tasks"]}
    assert list(by_name) == ["fetch", "transform", "report"]
    assert by_name["fetch"]["status"] == "succeeded" and by_name["fetch"]["traceback"] is None
    assert by_name["transform"]["error"] == "KeyError: 'the-key'"
    assert "in lookup" in by_name["transform"]["traceback"]
    assert by_name["report"]["status"] == "skipped" and by_name["report"]["attempts"] == 0
    assert set(by_name["fetch"]) == {
        "task",
        "kind",
        "status",
        "attempts",
        "duration",
        "error",
        "traceback",
    }


def test_dry_run_json_is_the_plan(tmp_path: Path) -> None:
    root = project(tmp_path)
    result = opus("run", "--dry-run", "--json", "--command", "get", "--context", "dev", cwd=root)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["command"] == "get" and plan["context"] == "dev"
    assert [(t["task"], t["kind"]) for t in plan["tasks"]] == [
        ("fetch", "Deep"),
        ("transform", "Deep"),
    ]
    assert plan["excluded"] == [
        {"task": "report", "why": "command 'get' is not in its commands ['apply']"}
    ]
    selected = json.loads(
        opus("run", "report", "--dry-run", "--json", "--context", "dev", cwd=root).stdout
    )
    assert [(t["task"], t["after"]) for t in selected["tasks"]] == [
        ("fetch", []),
        ("transform", ["fetch"]),
        ("report", ["transform"]),
    ]


def test_the_error_column_wraps_to_the_terminal_width_and_keeps_every_word(
    tmp_path: Path,
) -> None:
    message = "x" * 30 + " could not connect; set [plugins.db] url to the server's address"
    root = project(tmp_path, tasks=TASKS.replace('missing = "the-key"', f'fail = "{message}"'))
    result = opus("run", "--context", "dev", "--tb=no", cwd=root, env={"COLUMNS": "70"})
    lines = result.stdout.splitlines()
    assert all(len(line) <= 70 for line in lines), result.stdout
    start = lines.index(next(line for line in lines if line.startswith("transform")))
    column = lines[0].index("ERROR")
    wrapped = "".join(line[column:].strip() for line in lines[start : start + 5])
    assert ("RuntimeError: " + message).replace(" ", "") in wrapped.replace(" ", "")
    wide = opus("run", "--context", "dev", "--tb=no", cwd=root, env={"COLUMNS": "300"}).stdout
    assert "RuntimeError: " + message in wide


# -- fail fast and workers ----------------------------------------------------------------------


PARALLEL = """
[opus]
processors = ["processors:Deep"]
{opus}

[[tasks]]
kind = "Deep"
version = "v1"
metadata = {{ name = "boom" }}
spec = {{ fail = "boom" }}

[[tasks]]
kind = "Deep"
version = "v1"
metadata = {{ name = "later", dependencies = [] }}
spec = {{ sleep = 0.01 }}
"""


def test_fail_fast_flag_overrides_the_configuration(tmp_path: Path) -> None:
    root = project(tmp_path, "fail_fast = false", tasks=PARALLEL)
    plain = opus("run", "--runner", "sequential", "--json", cwd=root)
    assert json.loads(plain.stdout)["counts"]["succeeded"] == 1
    for flag in ("-x", "--fail-fast"):
        fast = opus("run", flag, "--runner", "sequential", "--json", cwd=root)
        assert fast.returncode == 1
        later = next(t for t in json.loads(fast.stdout)["tasks"] if t["task"] == "later")
        assert later["status"] == "skipped" and "fail_fast" in later["error"]


def test_workers_flag_overrides_max_workers(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    tasks = '[opus]\nprocessors = ["processors:Deep"]\n{opus}\n' + "".join(
        f'\n[[tasks]]\nkind = "Deep"\nversion = "v1"\nmetadata = {{{{ name = "t{i}" }}}}\n'
        f'spec = {{{{ sleep = 0.2, mark = "{marks}" }}}}\n'
        for i in range(4)
    )
    root = project(tmp_path, 'runner = "threadpool"\n[runners.threadpool]\nmax_workers = 1', tasks)

    def overlapping(*args: str) -> bool:
        marks.unlink(missing_ok=True)
        assert opus("run", *args, cwd=root).returncode == 0
        spans = sorted(tuple(map(float, line.split())) for line in marks.read_text().splitlines())
        return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))

    assert not overlapping()  # max_workers = 1: one at a time
    assert overlapping("-j", "4")
    bad = opus("run", "-j", "0", cwd=root)
    assert bad.returncode == 2 and "-j/--workers" in bad.stderr
    sequential = opus("run", "-j", "2", "--runner", "sequential", cwd=root)
    assert sequential.returncode == 2 and "-j/--workers" in sequential.stderr
    assert "'sequential' takes no max_workers" in sequential.stderr


def test_log_level_debug_logs_the_traceback_on_stderr(tmp_path: Path) -> None:
    root = project(tmp_path, 'log_level = "DEBUG"')
    result = opus("run", "--context", "dev", "--tb=no", cwd=root)
    assert "task 'transform' traceback:\nTraceback (most recent call last):" in result.stderr
    assert "Traceback" not in result.stdout
