"""The project folder, runs that run nothing, and what the history and state commands show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import one_line_error, opus

import opus_core
from opus_core import Tasks

PROCESSORS = """
    from pathlib import Path

    from opus_core import TaskProcessor, project_folder


    class Read(TaskProcessor):
        kind = "Read"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            with open(task.spec["file"]) as f:  # relative: the project folder is the cwd
                rows = f.read().split()
            return {"rows": len(rows), "cwd": str(Path.cwd()), "folder": str(project_folder())}


    class Broken(TaskProcessor):
        kind = "Broken"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            raise ValueError("no " + task.spec["what"])
"""


def shop(root: Path, tasks: str = "", runner: str = "sequential") -> Path:
    """`root/shop`: a project whose task reads `orders.csv`, relative to its folder."""
    folder = root / "shop"
    (folder / "sub").mkdir(parents=True)
    (folder / "orders.csv").write_text("a\nb\nc\n")
    (folder / "shop_tasks.py").write_text(textwrap.dedent(PROCESSORS))
    tasks = (
        tasks
        or """
        [[tasks]]
        kind = "Read"
        version = "v1"
        metadata = { name = "orders" }
        spec = { file = "orders.csv" }
    """
    )
    (folder / "opus.toml").write_text(
        textwrap.dedent(
            f"""
            [opus]
            runner = "{runner}"
            processors = ["shop_tasks:Read", "shop_tasks:Broken"]
            """
        )
        + textwrap.dedent(tasks)
    )
    return folder


def published(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return dict(json.loads(result.stdout)["tasks"][0])


# -- 6: the project folder ---------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["sequential", "process", "processpool", "threadpool"])
def test_tasks_run_in_the_project_folder_from_a_sub_folder(runner: str, tmp_path: Path) -> None:
    folder = shop(tmp_path, runner=runner)
    state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = opus("run", "-v", cwd=folder / "sub", env=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders  succeeded" in result.stdout
    values = json.loads(
        opus("state", "show", "orders", "--json", cwd=folder / "sub", env=state).stdout
    )["state"]["published"]
    assert values == {"rows": 3, "cwd": str(folder.resolve()), "folder": str(folder.resolve())}


def test_run_with_config_from_elsewhere_runs_in_the_project_folder(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = opus("run", "-v", "--config", str(folder / "opus.toml"), cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders  succeeded" in result.stdout


def test_from_config_leaves_the_callers_folder_and_names_the_project(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    script = tmp_path / "program.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            import opus_core

            tasks = opus_core.Tasks.from_config({str(folder / "opus.toml")!r})
            print(os.getcwd())
            print(opus_core.project_folder())
            """
        )
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("OPUS_CONFIG", None)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path), str(folder.resolve())]


def test_project_folder_is_exported() -> None:
    assert "project_folder" in opus_core.__all__
    assert opus_core.project_folder.__doc__


# -- 5 and 12: nothing in scope ------------------------------------------------------------


NO_PROJECT = "opus: nothing to run: no opus.toml here or in any parent folder"


def test_a_folder_without_opus_toml_runs_lists_and_draws_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for command in (["run"], ["tasks"], ["graph"]):
        result = opus(*command, cwd=tmp_path, env={"XDG_STATE_HOME": str(state)})
        assert result.returncode == 5, (command, result.stdout, result.stderr)
        assert result.stderr.strip().startswith(NO_PROJECT), command
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""
    assert not state.exists()  # no state folder for a folder without a project


def test_runs_that_run_nothing_are_not_recorded(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    assert opus("run", cwd=folder).returncode == 0
    real = json.loads(opus("runs", "list", "--json", cwd=folder).stdout)
    assert len(real) == 1
    assert opus("run", "-k", "nothing", cwd=folder).returncode == 5
    assert opus("run", "--command", "aply", cwd=folder).returncode == 5
    nothing = opus("run", "--json", "--command", "aply", cwd=folder)
    assert nothing.returncode == 5 and json.loads(nothing.stdout)["run"] is None
    assert json.loads(opus("runs", "list", "--json", cwd=folder).stdout) == real
    shown = json.loads(opus("runs", "show", "--json", cwd=folder).stdout)
    assert shown["id"] == real[0]["id"]


def test_tasks_and_graph_with_nothing_in_scope_exit_5_as_run_does(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    for command in ("run", "tasks", "graph"):
        result = opus(command, "--command", "aply", cwd=folder)
        assert result.returncode == 5, (command, result.stderr)
        assert "nothing to run: none of the 1 task(s) is in scope" in result.stderr
        assert "did you mean 'apply'?" in result.stderr
    assert opus("tasks", cwd=folder).returncode == 0
    assert opus("graph", cwd=folder).returncode == 0


# -- 13: run ids, tracebacks, names ---------------------------------------------------------


BROKEN_UNNAMED = """
    [[tasks]]
    kind = "Broken"
    version = "v1"
    spec = { what = "luck" }
"""


def test_run_json_names_the_run_and_runs_show_has_the_traceback(tmp_path: Path) -> None:
    folder = shop(tmp_path, BROKEN_UNNAMED)
    ran = opus("run", "--json", cwd=folder)
    assert ran.returncode == 1
    run_id = json.loads(ran.stdout)["run"]
    assert run_id == json.loads(opus("runs", "list", "--json", cwd=folder).stdout)[0]["id"]
    shown = opus("runs", "show", run_id, cwd=folder)
    assert shown.returncode == 0
    assert "FAILURES" in shown.stdout and "Traceback (most recent call last):" in shown.stdout
    assert "ValueError: no luck" in shown.stdout
    line = opus("runs", "show", "--tb", "line", cwd=folder).stdout
    assert "Traceback" not in line and "ValueError: no luck" in line


def test_a_task_without_a_name_has_one_name_in_the_table_and_the_logs(tmp_path: Path) -> None:
    folder = shop(tmp_path, BROKEN_UNNAMED)
    result = opus("run", cwd=folder)
    label = next(word for word in result.stdout.split() if word.startswith("Broken@"))
    assert len(label) == len("Broken@") + 12
    assert f"task '{label}' failed" in result.stderr
    assert f" {label} (failed, 1 attempt) " in result.stdout  # the FAILURES heading
    assert f"\n{label} " in "\n" + opus("runs", "show", cwd=folder).stdout.split("\n\n")[1]


# -- 11: opus state clear ----------------------------------------------------------------------


def test_state_clear_takes_a_task_name_as_show_does(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    assert opus("run", cwd=folder).returncode == 0
    assert opus("state", "show", "orders", cwd=folder).returncode == 0
    cleared = opus("state", "clear", "orders", cwd=folder)
    assert cleared.returncode == 0 and cleared.stdout.strip() == "cleared 1 record(s)"
    assert "no state for 'orders'" in one_line_error(opus("state", "show", "orders", cwd=folder))
    assert "no state for 'orders'" in one_line_error(opus("state", "clear", "orders", cwd=folder))


def test_state_clear_with_nothing_stored_asks_nothing(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    result = opus("state", "clear", cwd=folder)  # no --yes, stdin not a terminal
    assert result.returncode == 0 and result.stdout.strip() == "cleared 0 record(s)"


def test_state_clear_counts_the_damaged_files_it_removes(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    state = folder / ".state"
    text = (
        (folder / "opus.toml").read_text().replace("[opus]\n", '[opus]\npersistence = "file"\n', 1)
    )
    (folder / "opus.toml").write_text(text + f'\n[persistence.file]\ndirectory = "{state}"\n')
    assert opus("run", cwd=folder).returncode == 0
    (state / "t-damaged.json").write_text("{not json")
    asked = opus("state", "clear", cwd=folder)
    message = one_line_error(asked)
    assert "forgets all 1 record(s) and 1 damaged file(s)" in message
    cleared = opus("state", "clear", "--yes", cwd=folder)
    assert cleared.stdout.strip() == "cleared 1 record(s) and 1 damaged file(s)"


# -- 13: what plugins provide, the example's output ----------------------------------------


def test_plugins_list_says_what_loaders_and_command_plugins_provide(tmp_path: Path) -> None:
    from cli_helpers import make_distribution

    site = tmp_path / "site"
    make_distribution(
        site,
        "opus-stats",
        "opus_stats",
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_register_commands(commands):
            commands.add("stats", "opus_stats:stats", help="statistics")
        """,
        entry_point="stats",
    )
    result = opus("plugins", "list", "--json", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["yaml"]["provides"]["manifests"] == [".yaml", ".yml"]
    assert plugins["builtin"]["provides"]["manifests"] == [".toml", ".json"]
    assert plugins["stats"]["provides"]["commands"] == ["stats"]
    table = opus("plugins", "list", cwd=tmp_path, env={"PYTHONPATH": str(site)}).stdout
    assert "manifests: .yaml, .yml" in table and "commands: stats" in table


def test_the_etl_example_writes_nothing_into_the_current_folder(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "examples" / "etl.py"
    result = subprocess.run(
        [sys.executable, str(example), "sequential"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    written = Path(result.stdout.split(" rows into ")[1].split(" on ")[0])
    assert written.is_file() and written.parent != tmp_path


def test_the_plugin_scaffold_links_to_no_missing_page(tmp_path: Path) -> None:
    from opus_core.cli import plugin_templates

    for template in Path(plugin_templates.__file__).parent.glob("*.py"):
        assert "pypi.org/project/opus-core" not in template.read_text(), template


def test_engine_report_of_an_empty_run_has_no_run_id() -> None:
    report = Tasks().process_context()
    assert len(report) == 0 and report.run_id is None


MAIN_IN_A_PROGRAM = """
import os
import sys

from opus_core.cli import main

status = main(["run", "-v", "--config", sys.argv[1], "--no-progress"])
print("status", status)
print("folder", os.getcwd())
"""


def test_opus_main_called_in_a_program_gives_it_its_own_folder_back(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    ran = subprocess.run(
        [sys.executable, "-c", MAIN_IN_A_PROGRAM, str(folder / "opus.toml")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "orders  succeeded" in ran.stdout, ran.stderr
    assert ran.stdout.splitlines()[-2:] == ["status 0", f"folder {elsewhere}"], ran.stdout


MAIN_BESIDE_A_THREAD = """
import sys
import threading

from opus_core.cli import main

done = threading.Event()
worker = threading.Thread(target=done.wait)  # the program's own thread, not a task's
worker.start()
status = main(["run", "--config", sys.argv[1], "--no-progress"])
print("status", status, flush=True)
done.set()
"""


def test_opus_main_in_a_program_with_a_thread_of_its_own_returns_to_it(tmp_path: Path) -> None:
    folder = shop(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    ran = subprocess.run(  # a process: opus would end it (os._exit) if it took the thread for a task's
        [sys.executable, "-c", MAIN_BESIDE_A_THREAD, str(folder / "opus.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1] == "status 0", ran.stdout
    assert "cannot be killed" not in ran.stderr
