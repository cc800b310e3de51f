"""The opus command line: `opus_core.cli.main` in the test's process (`cli_helpers.opus`), a
real process where signals, a terminal or the exit itself are the point."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import (
    OPUS,
    interruptible,
    make_distribution,
    one_line_error,
    opus,
    opus_on_a_terminal,
)
from harness import until

from opus_core import __version__

PROCESSORS = """
import time
from opus_core import TaskProcessor

class Echo(TaskProcessor):
    kind = "Echo"
    def process_task(self, task, command, context, key_value_store, state_persistence):
        if task.spec.get("mark"):  # a file saying the task has started
            open(task.spec["mark"], "w").close()
        time.sleep(task.spec.get("sleep", 0))
        if task.spec.get("fail"):
            raise RuntimeError(task.spec["fail"])
        return {task.task_id: task.spec.get("say", "hi")}
"""


def project(tmp_path: Path, toml: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "processors.py").write_text(PROCESSORS)
    (tmp_path / "opus.toml").write_text(textwrap.dedent(toml))
    return tmp_path


BASIC = """
[opus]
processors = ["processors:Echo"]

[[tasks]]
kind = "Echo"
version = "v1"
metadata = { name = "first" }

[[tasks]]
kind = "Echo"
version = "v1"
metadata = { name = "second", dependencies = ["first"] }
spec = { say = "after first" }

[[tasks]]
kind = "Echo"
version = "v1"
metadata = { name = "prod-only", contexts = ["prod"] }
"""


# -- basics -----------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = opus("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"opus {__version__}"


def test_version_imports_no_plugin_and_help_survives_a_broken_one(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(site, "noisy-plugin", "noisy_plugin", "raise ImportError('imported!')")
    env = {"PYTHONPATH": str(site)}
    version = opus("--version", cwd=tmp_path, env=env)
    assert version.returncode == 0 and version.stderr == ""
    for args in (["--help"], ["run", "--help"]):  # --help lists plugins' commands: it loads them
        result = opus(*args, cwd=tmp_path, env=env)
        assert result.returncode == 0 and "usage: opus" in result.stdout
        assert result.stderr == (
            "opus: warning: plugin 'noisy_plugin' (noisy-plugin 1.0) failed to load: "
            "ImportError: imported!\n"
        )


def test_help_lists_every_command_and_imports_the_module_of_none(tmp_path: Path) -> None:
    from opus_core.cli.commands import COMMAND_HELP, COMMAND_MODULES

    result = opus("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name, line in COMMAND_HELP.items():
        assert re.search(rf"^    {name} +{re.escape(line[:24])}", result.stdout, re.M), name
    script = (  # start-up is the point: a fresh interpreter, as `opus` starts
        "import contextlib, io, sys\n"
        "from opus_core.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = main(sys.argv[1:])\n"
        f"print(sorted(m for m in {sorted(COMMAND_MODULES)!r} if m in sys.modules))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert imported.stdout.strip() == "[]"
    imported = subprocess.run(
        [sys.executable, "-c", script, "runs", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "['opus_core.cli.runs']"


HELLO_PLUGIN = """
from opus_core.plugin import hookimpl


@hookimpl
def opus_register_commands(commands):
    if commands.wanted is None:  # only when every command is wanted whole
        parser = commands.add("hello", say, help="say hello", configure=False)
        parser.add_argument("--name", default="world")
    else:
        commands.list("hello", "say hello")


def say(args):
    print("hello", args.name)
    return 0
"""


def test_a_listed_command_still_runs_with_its_arguments(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(site, "hello-plugin", "hello_plugin", HELLO_PLUGIN, entry_point="hello")
    env = {"PYTHONPATH": str(site)}
    listing = opus("--help", cwd=tmp_path, env=env)
    assert re.search(r"^    hello +say hello$", listing.stdout, re.M), listing.stdout
    result = opus("hello", "--name", "you", cwd=tmp_path, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello you\n", "")


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert "invalid choice: 'frobnicate'" in one_line_error(opus("frobnicate", cwd=tmp_path))
    assert "unrecognized arguments" in one_line_error(opus("run", "--bogus", cwd=tmp_path))


# -- opus run -------------------------------------------------------------------------


def test_run_runs_the_tasks_and_prints_a_summary(tmp_path: Path) -> None:
    result = opus("run", "-v", cwd=project(tmp_path, BASIC))
    assert result.returncode == 0, result.stderr
    assert "first" in result.stdout and "second" in result.stdout
    assert "prod-only" not in result.stdout.split("TASK")[1]
    assert result.stdout.strip().endswith("s") and "2 succeeded" in result.stdout
    assert "\r" not in result.stdout + result.stderr  # no progress line off a terminal


def test_run_exits_1_when_a_task_fails(tmp_path: Path) -> None:
    root = project(
        tmp_path, BASIC.replace('spec = { say = "after first" }', 'spec = { fail = "exploded" }')
    )
    result = opus("run", cwd=root)
    assert result.returncode == 1
    assert "failed" in result.stdout and "RuntimeError: exploded" in result.stdout


def test_context_command_and_runner_options(tmp_path: Path) -> None:
    root = project(tmp_path, BASIC)
    result = opus("run", "--context", "prod", "--runner", "process", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "3 succeeded" in result.stdout
    nothing = opus("run", "--command", "launch", cwd=root)
    assert nothing.returncode == 5 and nothing.stdout == ""
    assert "nothing to run" in nothing.stderr and "commands the tasks use: apply" in nothing.stderr


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path) -> None:
    root = project(tmp_path, BASIC.replace('say = "after first"', 'fail = "must not run"'))
    result = opus("run", "--dry-run", cwd=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plan for command 'apply' in context 'default': 2 task(s)"
    assert any(line.split()[:4] == ["2", "second", "Echo", "first"] for line in lines)
    assert (
        "prod-only" in result.stdout and "context 'default' is not in its contexts" in result.stdout
    )
    assert "must not run" not in result.stdout + result.stderr


def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    status, output = opus_on_a_terminal("run", cwd=project(tmp_path, BASIC))
    assert status == 0
    assert "\r" in output and "[2/2] running 0, failed 0" in output


def test_ctrl_c_stops_the_run_with_a_summary(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        BASIC.replace(
            'metadata = { name = "first" }',
            'metadata = { name = "first" }\nspec = { sleep = 30, mark = "first.started" }',
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(root / ".user")
    proc = interruptible([str(OPUS), "run", "--runner", "process"], cwd=root, env=env)
    assert until((root / "first.started").exists)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, (out, err)
    assert "cancelled" in out and "(interrupted)" in out
    assert "Traceback" not in err


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[opus\nrunner = 1", "invalid TOML"),
        ('[opus]\nrunner =\nlog_level = "INFO"\n', "line 2"),
        ("[nonsense]\nx = 1", "unknown section [nonsense]"),
        ('[opus]\nrunnner = "process"', "unknown key opus.runnner"),
        ("[opus]\nrunner = 3", "opus.runner must be a runner name, got 3"),
        ('[opus]\npersistence = ["memory"]', "opus.persistence must be a persistence name"),
        ("[opus]\nlogger = true", "opus.logger must be a logger name"),
        ('[opus]\nlog_level = "LOUD"', "opus.log_level must be one of DEBUG"),
        ('[opus]\ndisable_plugins = "x"', "opus.disable_plugins must be a list"),
        ("[opus]\nprocessors = [1]", "opus.processors must be a list of import paths"),
        ('[opus]\nfail_fast = "yes"', "opus.fail_fast must be true or false"),
        (
            '[opus]\nrunner = "warp"',
            "opus.runner: no runner named 'warp'; installed runners: "
            "dask, nice, process, processpool, ray, sequential, threadpool",
        ),
        ('[opus]\nrunner = "threadpoool"', "no runner named 'threadpoool'"),
        ('[opus]\npersistence = "cloud"', "no persistence named 'cloud'; installed persistence: "),
        ('[opus]\nlogger = "fancy"', "no logger named 'fancy'; installed loggers: "),
        (
            "[runners.process]\nmax_wrkers = 2",
            "unknown option 'max_wrkers' for runner 'process'; it accepts: max_workers",
        ),
        (
            '[runners.process]\nmax_workers = "many"',
            "runners.process.max_workers must be a whole number, got 'many'",
        ),
        (
            '[opus]\nrunner = "process"\n[runners.process]\nmax_workers = 0',
            "runners.process: max_workers must be a whole number of at least 1",
        ),
        ("[runners.warp]\nspeed = 9", "runners.warp: no runner named 'warp'"),
        ("[runners]\nprocess = 3", "runners.process must be a table"),
        ('[opus]\nprocessors = ["no_such_module:Thing"]', "cannot import 'no_such_module'"),
        ('[opus]\nprocessors = ["processors:Missing"]', "module 'processors' has no 'Missing'"),
        ('[opus]\nprocessors = ["processors:time"]', "not a TaskProcessor"),
        ('[opus]\nprocessors = ["nocolon"]', "is not an import path"),
        ('[[tasks]]\nversion = "v1"', "tasks[0]: a task needs a non-empty string kind"),
        (
            '[[tasks]]\nkind = "Echo"\nversion = "v1"\nmetadata = { name = 5 }',
            "tasks[0]: task of kind 'Echo': metadata.name",
        ),
        (
            '[opus]\nprocessors = ["processors:Echo"]\n[[tasks]]\nkind = "Nope"\nversion = "v1"',
            "tasks[0]: task 'Nope@",
        ),
        ('[[tasks]]\nkind = "Echo"\nversion = "v1"\nspecs = {}', "tasks[0]: unknown key 'specs'"),
        ("tasks = 3", "tasks must be an array of tables"),
    ],
)
def test_bad_configuration_is_one_line_naming_file_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    root = project(tmp_path, toml)
    message = one_line_error(opus("run", cwd=root))
    assert message.startswith("opus: error: "), message
    assert expected in message, message
    if "invalid TOML" not in expected and "line" not in expected:
        assert str(root / "opus.toml") in message


def test_pip_hint_for_known_plugins(tmp_path: Path) -> None:
    root = project(tmp_path, '[opus]\nlogger = "colorlog"')
    message = one_line_error(
        opus("run", "--dry-run", cwd=root, env={"OPUS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    )
    assert "pip install opus-plugin-colorlog provides it" in message


def test_missing_config_file(tmp_path: Path) -> None:
    message = one_line_error(opus("run", "--config", "nowhere.toml", cwd=tmp_path))
    assert "nowhere.toml: no such configuration file" in message
    message = one_line_error(opus("run", cwd=tmp_path, env={"OPUS_CONFIG": "gone.toml"}))
    assert "gone.toml: no such configuration file (from $OPUS_CONFIG)" in message


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    root = project(tmp_path, '[opus]\nrunner = "warp"')
    result = opus("run", "--debug", cwd=root)
    assert (
        result.returncode == 2 and "Traceback" in result.stderr and "ConfigError" in result.stderr
    )


# -- finding and merging configuration ----------------------------------------------------


def test_config_is_found_in_parent_directories_and_via_env(tmp_path: Path) -> None:
    root = project(tmp_path, BASIC)
    nested = root / "a" / "b"
    nested.mkdir(parents=True)
    result = opus("config", "path", cwd=nested)
    assert f"project: {root / 'opus.toml'} (found by search)" in result.stdout
    other = tmp_path / "other.toml"
    other.write_text('[opus]\nrunner = "process"\n')
    assert (
        "found by $OPUS_CONFIG"
        in opus("config", "path", cwd=nested, env={"OPUS_CONFIG": str(other)}).stdout
    )
    assert "found by --config" in opus("config", "path", "--config", str(other), cwd=nested).stdout
    assert "project: none" in opus("config", "path", cwd=Path("/")).stdout


def test_user_file_is_merged_beneath_the_project_file(tmp_path: Path) -> None:
    root = project(tmp_path, '[opus]\nrunner = "process"\n')
    user_dir = root / ".user-config" / "opus"
    user_dir.mkdir(parents=True)
    (user_dir / "opus.toml").write_text('[opus]\nrunner = "sequential"\nlog_level = "WARNING"\n')
    result = opus("config", "show", cwd=root)
    assert f'opus.runner = "process"  # {root / "opus.toml"}' in result.stdout
    assert f'opus.log_level = "WARNING"  # {user_dir / "opus.toml"}' in result.stdout
    assert "(read)" in opus("config", "path", cwd=root).stdout


def test_config_init_writes_a_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    assert opus("config", "init", cwd=tmp_path).returncode == 0
    text = (tmp_path / "opus.toml").read_text()
    assert text.startswith("#") and "[opus]" in text and "# [[tasks]]" in text
    started = opus("run", cwd=tmp_path)  # the starter is valid, with no task yet: exit 5
    assert started.returncode == 5 and "has no tasks" in started.stderr, started.stderr
    message = one_line_error(opus("config", "init", cwd=tmp_path))
    assert "already exists; pass --force" in message
    (tmp_path / "opus.toml").write_text("# mine\n")
    assert opus("config", "init", "--force", cwd=tmp_path).returncode == 0
    assert "[opus]" in (tmp_path / "opus.toml").read_text()


# -- plugins ------------------------------------------------------------------------------------


def test_plugins_list_shows_builtins_and_installed_plugins(tmp_path: Path) -> None:
    result = opus("plugins", "list", cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "DISTRIBUTION", "STATUS", "PROVIDES", "HOOKS"]
    assert any(line.startswith("builtin ") and "opus-core" in line for line in lines)
    assert any(line.startswith("nice ") and "opus-nice-runner" in line for line in lines)


def test_plugins_list_json(tmp_path: Path) -> None:
    records = json.loads(opus("plugins", "list", "--json", cwd=tmp_path).stdout)
    builtin = next(r for r in records if r["name"] == "builtin")
    assert set(builtin) == {
        "name",
        "version",
        "distribution",
        "provides",
        "hooks",
        "status",
        "error",
        "builtin",
    }
    assert (
        builtin["builtin"] is True and builtin["status"] == "enabled" and builtin["error"] is None
    )
    assert builtin["provides"]["runners"] == ["sequential", "process", "processpool"]
    assert builtin["provides"]["persistence"] == ["memory", "sqlite"]
    assert builtin["provides"]["loggers"] == ["plain"]
    assert {"runners", "persistence", "loggers", "processors"} <= set(builtin["provides"])
    assert (
        "commands" not in builtin["provides"] and "opus_register_commands" not in builtin["hooks"]
    )
    assert [r["name"] for r in records][:2] == ["builtin", "builtin.commands"]
    commands = records[1]
    assert commands["builtin"] is True and commands["distribution"] == "opus-core"
    assert commands["hooks"] == ["opus_register_commands"]
    assert commands["provides"]["commands"] == [
        "run",
        "tasks",
        "graph",
        "report",
        "plugins",
        "config",
        "state",
        "runs",
        "why",
        "cache",
        "completion",
    ]
    nice = next(r for r in records if r["name"] == "nice")
    assert nice == {
        "name": "nice",
        "version": "0.1.0",
        "distribution": "opus-nice-runner",
        "provides": {"runners": ["nice"], "persistence": [], "loggers": [], "processors": []},
        "hooks": ["opus_register_runners"],
        "status": "enabled",
        "error": None,
        "builtin": False,
    }


def test_broken_plugin_is_a_warning_and_an_error_row(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site,
        "broken-plugin",
        "broken_plugin",
        "import not_installed_dependency\n",
        entry_point="broken",
    )
    env = {"PYTHONPATH": str(site)}
    result = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0
    warnings = result.stderr.strip().splitlines()
    assert warnings == [
        "opus: warning: plugin 'broken' (broken-plugin 1.0) failed to load: "
        "ModuleNotFoundError: No module named 'not_installed_dependency'"
    ]
    broken = next(r for r in json.loads(result.stdout) if r["name"] == "broken")
    assert broken["status"] == "error" and "not_installed_dependency" in broken["error"]
    assert broken["distribution"] == "broken-plugin" and broken["version"] == "1.0"
    table = opus("plugins", "list", cwd=tmp_path, env=env).stdout
    assert "error: ModuleNotFoundError" in table

    root = project(tmp_path / "project", BASIC)
    assert opus("run", cwd=root, env=env).returncode == 0  # opus keeps working
    (root / "opus.toml").write_text('[opus]\nrunner = "broken-runner"\n')
    message = one_line_error(opus("run", cwd=root, env=env))
    assert "no runner named 'broken-runner'" in message
    assert "plugin 'broken' (broken-plugin 1.0) failed to load: ModuleNotFoundError" in message


def test_autoload_can_be_disabled(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site, "broken-plugin", "broken_plugin", "raise ImportError('x')", entry_point="broken"
    )
    result = opus(
        "plugins",
        "list",
        "--json",
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "OPUS_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert [r["name"] for r in json.loads(result.stdout)] == ["builtin", "builtin.commands"]
    assert result.stderr == ""


def test_disable_plugins_in_config(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site, "broken-plugin", "broken_plugin", "raise ImportError('x')", entry_point="broken"
    )
    (tmp_path / "opus.toml").write_text('[opus]\ndisable_plugins = ["broken", "nice"]\n')
    result = opus("plugins", "list", "--json", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    statuses = {r["name"]: r["status"] for r in json.loads(result.stdout)}
    assert statuses["broken"] == statuses["nice"] == "disabled"
    assert statuses["builtin"] == "enabled"
    assert {s for name, s in statuses.items() if name not in ("broken", "nice")} == {"enabled"}
    assert result.stderr == ""


def test_two_plugins_providing_one_runner_name_both_distributions(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site,
        "copycat-runner",
        "copycat",
        """
        from opus_core import hookimpl
        from opus_core.runners import SequentialRunner

        class Nice(SequentialRunner):
            name = "nice"

        @hookimpl
        def opus_register_runners():
            return [Nice]
    """,
    )
    env = {"PYTHONPATH": str(site)}
    listing = opus("plugins", "list", cwd=tmp_path, env=env)
    assert listing.returncode == 0  # listing still works, with a warning
    assert "runner 'nice' is provided by both" in listing.stderr
    (tmp_path / "opus.toml").write_text('[opus]\nrunner = "nice"\n')
    message = one_line_error(opus("run", cwd=tmp_path, env=env))
    assert "runner 'nice' is provided by both" in message
    assert "opus-nice-runner" in message and "copycat-runner" in message


def test_a_plugin_distribution_provides_processors(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site,
        "greeter-plugin",
        "greeter",
        """
        from opus_core import TaskProcessor, hookimpl

        class Greet(TaskProcessor):
            kind = "Greet"
            def process_task(self, task, command, context, key_value_store, state_persistence):
                print("greetings from the plugin processor", flush=True)

        @hookimpl
        def opus_register_processors():
            return [Greet]
    """,
    )
    (tmp_path / "opus.toml").write_text('[[tasks]]\nkind = "Greet"\nversion = "v1"\n')
    result = opus("run", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert "greetings from the plugin processor" in result.stdout
    listed = json.loads(
        opus("plugins", "list", "--json", cwd=tmp_path, env={"PYTHONPATH": str(site)}).stdout
    )
    assert next(r for r in listed if r["name"] == "greeter")["provides"]["processors"] == ["Greet"]


def test_custom_runner_example_runs_with_its_option(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "custom_runner"
    result = opus("run", "--config", str(example / "opus.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "background-job ran at niceness 5" in result.stderr  # a log line


def test_task_decorator_uses_the_configured_runner(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text('[opus]\nrunner = "sequential"\n')
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent("""
        import os
        from opus_core import task

        @task
        def where():
            return os.getpid()

        print(where().get_result() == os.getpid())
    """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.stdout.strip() == "True", result.stderr
    (tmp_path / "opus.toml").write_text("")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.stdout.strip() == "False", result.stderr  # default: a process of its own


# -- state ----------------------------------------------------------------------------------


def test_state_commands_over_memory_persistence(tmp_path: Path) -> None:
    assert opus("state", "list", cwd=tmp_path).stdout.strip() == "no state"
    assert "no state for 'web'" in one_line_error(opus("state", "show", "web", cwd=tmp_path))
    assert "no state for 'web'" in one_line_error(opus("state", "clear", "web", cwd=tmp_path))
    assert opus("state", "clear", "--yes", cwd=tmp_path).stdout.strip() == "cleared 0 record(s)"


def test_tasks_without_a_runner_uses_the_configured_one(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent("""
        import os
        from opus_core import Task, TaskProcessor, Tasks

        class Where(TaskProcessor):
            kind = "Where"
            def process_task(self, task, command, context, key_value_store, state_persistence):
                return {"pid": os.getpid()}

        tasks = Tasks()
        tasks.register_task_processor(Where())
        tasks.add_task(Task("Where", "v1", metadata={"name": "w"}))
        tasks.process_context().raise_on_failure()
        print(tasks.key_value_store.store["pid"] == os.getpid())
    """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / ".user")

    def where() -> str:
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert where() == "True"  # no opus.toml: sequential, in this process
    (tmp_path / "opus.toml").write_text('[opus]\nrunner = "process"\n')
    assert where() == "False"  # the configured runner: a process of its own


def test_misspelt_keys_and_names_get_a_suggestion(tmp_path: Path) -> None:
    cases = {
        '[opus]\nruner = "sequential"\n': "unknown key opus.runer (did you mean 'runner'?)",
        "[runer]\n": "unknown section [runer] (did you mean 'runners'?)",
        BASIC.replace(
            'metadata = { name = "second"', 'metadata = { name = "second", dependancies = []'
        ): "unknown metadata key 'dependancies' (did you mean 'dependencies'?)",
        BASIC.replace(
            'dependencies = ["first"]', 'dependencies = ["frist"]'
        ): "but no task is named 'frist' (did you mean 'first'?)",
    }
    for index, (toml, expected) in enumerate(cases.items()):
        root = project(tmp_path / str(index), toml)
        assert expected in one_line_error(opus("run", cwd=root))


def test_a_label_dependency_no_task_could_match_is_warned_about(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        BASIC.replace('dependencies = ["first"]', 'dependencies = [{ labels = { tier = "dbb" } }]'),
    )
    expected = (
        "task 'second' depends on every task labelled {labels = {tier = \"dbb\"}}, but no task "
        "has the label tier=dbb: it orders nothing (misspelt?)"
    )
    assert expected in opus("run", "--dry-run", cwd=root).stderr
    ran = opus("run", cwd=root)
    assert ran.returncode == 0 and expected in ran.stderr
