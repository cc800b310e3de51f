"""Every example runs, as a user would run it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=EXAMPLES.parent
    )


def test_hello_world_writes_its_file(tmp_path: Path) -> None:
    target = tmp_path / "hello.txt"
    result = run_example(str(EXAMPLES / "hello_world.py"), str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "Hello World!"
    assert f'File written to "{target}"' in result.stdout


@pytest.mark.parametrize("runner", ["sequential", "process"])
def test_pipeline_runs_every_task_in_dev(runner: str) -> None:
    result = run_example(str(EXAMPLES / "pipeline.py"), "--context", "dev", "--runner", runner)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web using db.internal:5432 and cache.internal:6379 (dev)" in result.stdout
    assert "smoke-test   succeeded  attempts=2" in result.stdout
    assert "debug-tools  succeeded" in result.stdout
    assert "smoke test: http://web.internal answered" in result.stdout


@pytest.mark.parametrize(
    "runner", ["sequential", "process", "threadpool", pytest.param("dask", marks=pytest.mark.slow)]
)
def test_etl_runs_the_same_on_every_runner(runner: str, tmp_path: Path) -> None:
    output = tmp_path / "rows.json"
    result = run_example(str(EXAMPLES / "etl.py"), runner, str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"loaded 6 rows into {output} on {runner}" in result.stdout
    assert "skipped a reading: could not convert string to float: 'sensor error'" in result.stdout
    assert "not loaded: task 'load' did not run: its input 'transform' failed" in result.stdout
    rows = json.loads(output.read_text())
    assert [row["celsius"] for row in rows] == [10.0, 11.7, 13.3, 15.0, 16.7, 18.3]


def test_pipeline_leaves_dev_only_tasks_out_of_prod() -> None:
    result = run_example(str(EXAMPLES / "pipeline.py"), "--context", "prod")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "debug-tools" not in result.stdout
    assert "(prod)" in result.stdout


def test_ten_sleepy_workers_example_runs_each_worker_in_a_process_of_its_own() -> None:
    # That the ten run at once is proven with a barrier, not a clock, in test_task_decorator.
    result = run_example(str(EXAMPLES / "sleepy_workers.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    workers = [line.split() for line in lines if line.startswith("worker ")]
    assert [int(words[1]) for words in workers] == list(range(10))
    assert len({words[-1] for words in workers}) == 10  # ten processes
    assert re.fullmatch(r"10 sleepy workers finished in \d+\.\d\ds", lines[-1]), lines[-1]


def test_hello_world_opus_toml_is_the_main_job(tmp_path: Path) -> None:
    from cli_helpers import opus

    result = opus("run", "--config", str(EXAMPLES / "hello_world" / "opus.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 succeeded" in result.stdout
    written = Path(tempfile.gettempdir()) / "opus-hello-again.txt"
    assert written.read_text() == "Hello World!"


def test_manifests_example_leaves_the_slow_task_out_and_runs_the_rest_in_order() -> None:
    result = run_example(str(EXAMPLES / "manifests.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split()[:2] for line in result.stdout.splitlines() if "attempts=" in line]
    assert rows == [
        ["network", "succeeded"],
        ["database", "succeeded"],
        ["web", "succeeded"],
        ["smoke-test", "succeeded"],
    ]
    assert "left out (slow; --slow runs them): soak-test" in result.stdout
    assert "database: database on net-42 (owner: dba-team)" in result.stdout
    assert "4 succeeded" in result.stdout


def test_manifests_example_runs_the_slow_task_when_asked() -> None:
    result = run_example(str(EXAMPLES / "manifests.py"), "--slow")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak-test    succeeded" in result.stdout
    assert "left out" not in result.stdout


def test_manifests_opus_toml_runs_with_opus_run(tmp_path: Path) -> None:
    from cli_helpers import opus

    result = opus("run", "--config", str(EXAMPLES / "manifests" / "opus.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 succeeded" in result.stdout


def test_shell_steps_example_runs_its_commands_in_a_copy_of_its_folder(tmp_path: Path) -> None:
    import shutil

    from cli_helpers import opus

    project = tmp_path / "shell_steps"
    shutil.copytree(EXAMPLES / "shell_steps", project)
    result = opus("run", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 succeeded" in result.stdout
    assert "INFO    report: corner shop: 3 orders" in result.stderr
    assert (project / "build" / "report.txt").read_text() == "corner shop: 3 orders\n"


def test_the_command_tasks_page_shows_the_shell_steps_example_as_it_is() -> None:
    page = (EXAMPLES.parent / "docs" / "command-tasks.md").read_text()
    assert (EXAMPLES / "shell_steps" / "opus.toml").read_text() in page


def test_resources_example_runs_every_step_in_a_copy_of_its_folder(tmp_path: Path) -> None:
    import json
    import shutil

    from cli_helpers import opus

    project = tmp_path / "resources"
    shutil.copytree(EXAMPLES / "resources", project)
    result = opus("run", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    statuses = {t["task"]: t["status"] for t in json.loads(result.stdout)["tasks"]}
    assert set(statuses.values()) == {"succeeded"} and len(statuses) == 5
    assert "INFO    reindex: reindexing with both connections" in result.stderr


def test_output_example_keeps_what_each_attempt_printed(tmp_path: Path) -> None:
    import shutil

    from cli_helpers import opus

    project = tmp_path / "output"
    shutil.copytree(EXAMPLES / "output", project)
    result = opus("run", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = opus("runs", "show", "latest", "flaky", "--output", cwd=project).stdout
    first, second = shown.split("attempt 2 (succeeded): stdout")
    assert "attempt 1 (failed): stderr" in first and "the server went away" in first
    assert "WARNING chatty: connection lost after 3 rows" in first
    assert "attempt 2: fetching 3 rows\nrow 0\nrow 1\nrow 2" in second
    assert "INFO    flaky: all 3 rows fetched" in second
    everything = opus("runs", "show", "--output", cwd=project).stdout
    assert "INFO    count: counting" in everything
