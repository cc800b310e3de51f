"""opus_core.testing: the `opus_project` fixture a plugin author tests with."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from opus_core.testing import OpusProject, import_root
from opus_core.testing.cli import ExitedInProcess

PLUGIN = """
    from opus_core import TaskProcessor
    from opus_core.plugin import hookimpl


    class Shout(TaskProcessor):
        kind = "Shout"

        def process_task(self, task, command, context="default", key_value_store=None, state_persistence=None):
            text = task.spec["text"].upper() + "!"
            self.logger.info(f"shouted {text}")
            return {"shout": text}


    @hookimpl
    def opus_register_processors():
        return [Shout]
"""

TASKS = """
    [[tasks]]
    kind = "Shout"
    version = "v1"
    metadata = { name = "shout" }
    spec = { text = "hey" }
"""

PRINT_ENVIRONMENT = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def test_a_plugin_written_into_the_project_runs_in_process(opus_project: OpusProject) -> None:
    opus_project.write("kit_shout.py", PLUGIN)
    opus_project.register("kit_shout")
    opus_project.write_config(TASKS)
    tasks = opus_project.tasks()
    report = tasks.process_context()
    assert report.ok, report.summary()
    assert tasks.key_value_store.store["shout"] == "HEY!"


def test_a_plugin_runs_through_the_opus_command(opus_project: OpusProject) -> None:
    opus_project.write("kit_shout.py", PLUGIN)
    opus_project.register("kit_shout")
    opus_project.write_config(TASKS)
    result = opus_project.run("run")
    assert result.returncode == 0, result.stderr
    assert "shouted HEY!" in result.stdout + result.stderr


def test_a_registered_package_is_listed_by_opus(opus_project: OpusProject) -> None:
    opus_project.write("plugins/kit_pkg/__init__.py", PLUGIN)
    opus_project.register(import_module_from(opus_project.path / "plugins", "kit_pkg"))
    result = opus_project.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = [p for p in json.loads(result.stdout) if "Shout" in p["provides"]["processors"]]
    assert [p["status"] for p in listed] == ["enabled"]


def import_module_from(folder: Path, name: str) -> ModuleType:
    """Import `name` from `folder` without leaving `folder` on the path."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def test_files_are_written_dedented_into_the_project(opus_project: OpusProject) -> None:
    config = opus_project.write_config(TASKS)
    assert config == opus_project.path / "opus.toml"
    assert config.read_text().startswith('[[tasks]]\nkind = "Shout"\n')
    nested = opus_project.write("deploy/web.toml", "    a = 1\n    b = 2\n")
    assert nested.read_text() == "a = 1\nb = 2\n"
    assert opus_project.write_config().read_text() == ""


def test_opus_runs_without_the_users_files_and_with_the_plugins(
    opus_project: OpusProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    opus_project.write("kit_shout.py", PLUGIN)
    opus_project.write("plugins/kit_pkg/__init__.py", PLUGIN)
    opus_project.register("kit_shout")
    opus_project.register(import_module_from(opus_project.path / "plugins", "kit_pkg"))
    monkeypatch.setattr(opus_project, "command", lambda: PRINT_ENVIRONMENT)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("OPUS_CONFIG", "/home/someone/opus.toml")

    result = opus_project.run(env={"EXTRA": "1"}, process=True)

    seen = json.loads(result.stdout)
    assert not [key for key in seen if key.startswith("OPUS_") and key != "OPUS_PLUGINS"]
    assert seen["OPUS_PLUGINS"] == "kit_shout,kit_pkg"
    assert seen["PYTHONPATH"].split(os.pathsep) == [
        str(opus_project.path),
        str(opus_project.path / "plugins"),
        "/elsewhere",
    ]
    for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        folder = Path(seen[key])
        assert folder.is_dir() and opus_project.path.parent in folder.parents
    assert seen["EXTRA"] == "1"


ENVIRONMENT_COMMAND = """
    import json
    import os
    import sys

    from opus_core.plugin import hookimpl


    @hookimpl
    def opus_register_commands(commands):
        commands.add("environment", show, help="what this opus sees")


    def show(args):
        seen = {"environ": dict(os.environ), "path": sys.path, "cwd": os.getcwd()}
        print(json.dumps(seen))
        return 0
"""


def test_opus_in_the_tests_process_sees_what_a_new_process_would(
    opus_project: OpusProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    opus_project.write("kit_environment.py", ENVIRONMENT_COMMAND)
    opus_project.write("plugins/kit_pkg/__init__.py", PLUGIN)
    opus_project.register("kit_environment")
    package = import_module_from(opus_project.path / "plugins", "kit_pkg")
    opus_project.register(package)
    monkeypatch.setenv("OPUS_CONFIG", "/home/someone/opus.toml")
    environ, path = dict(os.environ), list(sys.path)

    result = opus_project.run("environment", env={"EXTRA": "1"})

    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert not [key for key in seen["environ"] if key.startswith("OPUS_") and key != "OPUS_PLUGINS"]
    assert seen["environ"]["OPUS_PLUGINS"] == "kit_environment,kit_pkg"
    assert seen["environ"]["EXTRA"] == "1"
    assert seen["path"][:2] == [str(opus_project.path), str(opus_project.path / "plugins")]
    assert seen["cwd"] == str(opus_project.path)
    assert (dict(os.environ), sys.path, Path.cwd()) == (environ, path, opus_project.path)
    assert importlib.import_module("kit_pkg") is package  # the test's modules are its own


def test_a_run_that_ends_the_process_needs_a_process_of_its_own(opus_project: OpusProject) -> None:
    opus_project.write("kit_exit.py", ENVIRONMENT_COMMAND.replace("return 0", "os._exit(7)"))
    opus_project.register("kit_exit")
    with pytest.raises(ExitedInProcess, match=r"os\._exit\(7\).*process=True"):
        opus_project.run("environment")
    result = opus_project.run("environment", process=True)
    assert result.returncode == 7


def test_the_test_itself_runs_without_the_users_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPUS_CONFIG", "/home/someone/opus.toml")
    with monkeypatch.context() as patch:
        project = OpusProject(tmp_path, patch)
        assert "OPUS_CONFIG" not in os.environ
        assert Path(os.environ["XDG_STATE_HOME"]).is_relative_to(tmp_path)
        assert Path(os.environ["XDG_CONFIG_HOME"]).is_relative_to(tmp_path)
        project.close()
    assert os.environ["OPUS_CONFIG"] == "/home/someone/opus.toml"


def test_a_module_written_in_one_project_does_not_stay_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in (1, 2):
        with monkeypatch.context() as patch:
            project = OpusProject(tmp_path / str(number), patch)
            project.write("kit_numbered.py", f"NUMBER = {number}\n")
            project.register("kit_numbered")
            assert [plugin.NUMBER for plugin in project.plugins] == [number]
            project.close()
        assert "kit_numbered" not in sys.modules


def test_import_root_is_the_folder_to_put_on_the_path(opus_project: OpusProject) -> None:
    import opus_core.plugin.spec

    site = Path(opus_core.__file__).resolve().parents[1]
    assert import_root(opus_core) == site
    assert import_root(opus_core.plugin.spec) == site
    assert import_root(sys) is None


def test_importing_the_pytest_plugin_imports_no_other_opus_module() -> None:
    code = "import sys, opus_core.testing; print(sorted(m for m in sys.modules if m.startswith('opus')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['opus_core', 'opus_core.testing', 'opus_core.version']"


OPTIONED = """
    from dataclasses import dataclass

    from opus_core.plugin import hookimpl

    SEEN = []


    @dataclass
    class Options:
        volume: int = 1


    @hookimpl
    def opus_plugin_options():
        return Options


    @hookimpl
    def opus_configure(options):
        SEEN.append(options.volume)
        print(f"volume {options.volume}")
"""


def test_a_plugin_registered_with_a_name_reads_its_plugins_table_uninstalled(
    opus_project: OpusProject,
) -> None:
    opus_project.write("kit_loud.py", OPTIONED)
    opus_project.register("kit_loud", name="loud")
    opus_project.write_config("[plugins.loud]\nvolume = 11\n")
    opus_project.tasks()
    assert importlib.import_module("kit_loud").SEEN == [11]
    listed = opus_project.run("plugins", "list", "--json")
    assert {"name": "loud", "status": "enabled"}.items() <= next(
        p for p in json.loads(listed.stdout) if p["name"] == "loud"
    ).items()
    ran = opus_project.run("run", "--dry-run")
    assert "volume 11" in ran.stdout, (ran.stdout, ran.stderr)


MAYBE = """
    from pathlib import Path

    from opus_core import TaskProcessor
    from opus_core.plugin import hookimpl


    class Maybe(TaskProcessor):
        kind = "Maybe"

        def process_task(self, task, command, context="default", key_value_store=None,
                         state_persistence=None):
            if "write" in task.spec:
                Path(task.spec["write"]).write_text("written")
            if task.spec.get("fail"):
                raise RuntimeError(task.spec["fail"])
            return {}


    @hookimpl
    def opus_register_processors():
        return [Maybe]
"""

A_FAILURE = """
    [[tasks]]
    kind = "Maybe"
    version = "v1"
    metadata = { name = "build" }

    [[tasks]]
    kind = "Maybe"
    version = "v1"
    metadata = { name = "deploy", dependencies = ["build"] }
    spec = { fail = "the cluster is down" }

    [[tasks]]
    kind = "Maybe"
    version = "v1"
    metadata = { name = "announce", dependencies = ["deploy"] }
"""


def maybe(opus_project: OpusProject, tasks: str = A_FAILURE) -> None:
    opus_project.write("kit_maybe.py", MAYBE)
    opus_project.register("kit_maybe")
    opus_project.write_config(tasks)


@pytest.mark.parametrize("output", [(), ("--json",), ("-q", "--tb=no")], ids=str)
def test_assert_outcomes_reads_how_each_task_of_the_run_ended(
    opus_project: OpusProject, output: tuple[str, ...]
) -> None:
    maybe(opus_project)
    result = opus_project.run("run", *output)
    assert result.ret == result.returncode == 1
    result.assert_outcomes(succeeded=1, failed=1, skipped=1)
    assert result.outcomes == {
        "succeeded": 1,
        "failed": 1,
        "skipped": 1,
        "timed_out": 0,
        "restored": 0,
        "cancelled": 0,
    }


def test_assert_outcomes_says_what_differs(opus_project: OpusProject) -> None:
    maybe(opus_project)
    result = opus_project.run("run")
    with pytest.raises(AssertionError, match=r"outcomes differ \(succeeded: expected 3, got 1, "):
        result.assert_outcomes(succeeded=3)
    with pytest.raises(AssertionError, match="skipped: expected 0, got 1"):
        result.assert_outcomes(succeeded=1, failed=1)


def test_a_run_with_nothing_in_scope_ran_no_task(opus_project: OpusProject) -> None:
    maybe(opus_project)
    result = opus_project.run("run", "--context", "nowhere", "-k", "nothing")
    assert result.ret == 5, result.stderr
    result.assert_outcomes()


def test_a_command_that_runs_nothing_has_no_outcomes(opus_project: OpusProject) -> None:
    maybe(opus_project)
    result = opus_project.run("run", "--dry-run")
    with pytest.raises(AssertionError, match="no run outcome in the output of .* --dry-run"):
        result.assert_outcomes()


def test_the_output_matches_lines_as_pytester_results_do(opus_project: OpusProject) -> None:
    maybe(opus_project)
    result = opus_project.run("run", "--tb=line")
    assert isinstance(result, subprocess.CompletedProcess)
    assert isinstance(result.stdout, str) and "deploy" in result.stdout + result.stderr
    result.stdout.fnmatch_lines(["*deploy*failed*", "1 succeeded, 1 failed, 1 skipped in *s"])
    result.stdout.re_match_lines([r"^1 succeeded, 1 failed, 1 skipped in [0-9.]+s$"])
    result.stdout.no_fnmatch_line("*timed_out*")
    result.stderr.fnmatch_lines(["*the cluster is down*"])
    with pytest.raises(pytest.fail.Exception):
        result.stdout.fnmatch_lines(["*no such line*"])
    with pytest.raises(pytest.fail.Exception):
        result.stderr.no_re_match_line(".*cluster")
    assert result.stdout.lines == result.stdout.splitlines()


def test_tasks_and_run_work_in_the_project_folder(opus_project: OpusProject) -> None:
    maybe(
        opus_project,
        '[[tasks]]\nkind = "Maybe"\nversion = "v1"\nmetadata = { name = "w" }\n'
        'spec = { write = "out.txt" }\n',
    )
    assert Path.cwd() == opus_project.path
    assert opus_project.tasks().process_context().ok
    assert (opus_project.path / "out.txt").read_text() == "written"
    (opus_project.path / "out.txt").unlink()
    opus_project.run("run").assert_outcomes(succeeded=1)
    assert (opus_project.path / "out.txt").read_text() == "written"
