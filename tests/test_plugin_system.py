"""The plugin system end to end: real installed distributions and the real `opus` command.

Every plugin here is a distribution written into `tmp_path / "site"` (a
`*.dist-info` with `entry_points.txt`, or an `.egg-info`) and found by
`importlib.metadata` through `PYTHONPATH`; every check reads what `opus`
prints (stdout, stderr, exit status), as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import make_distribution, one_line_error, opus

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks, hookimpl

# -- helpers ------------------------------------------------------------------------------

GOOD = """
from pathlib import Path

from opus_core import TaskProcessor, hookimpl
from opus_core.runners import SequentialRunner


class Careful(SequentialRunner):
    name = "careful"


class Stamp(TaskProcessor):
    kind = "Stamp"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with open("ran.log", "a") as log:
            log.write(task.task_id + "\\n")
        return {task.task_id: "stamped"}


@hookimpl
def opus_register_runners():
    return [Careful]


@hookimpl
def opus_register_processors():
    return [Stamp]


@hookimpl
def opus_task_finished(task, result):
    with open("good-finished.log", "a") as log:
        log.write(f"{result.task_id} {result.status}\\n")
"""

GOOD_PROJECT = """
[opus]
runner = "careful"
persistence = "memory"

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "one" }

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "two", dependencies = ["one"] }
"""


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    """PYTHONPATH with the test's site, and a state directory inside tmp_path."""
    return {
        "PYTHONPATH": str(tmp_path / "site"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        **extra,
    }


def install(tmp_path: Path, name: str, source: str, entry_point: str | None = None) -> None:
    """Install a one-module plugin distribution `opus-<name>` (module `<name>`)."""
    module = name.replace("-", "_")
    make_distribution(tmp_path / "site", f"opus-{name}", module, source, entry_point=entry_point)


def project(tmp_path: Path, toml: str, directory: str = "project") -> Path:
    root = tmp_path / directory
    root.mkdir(parents=True, exist_ok=True)
    (root / "opus.toml").write_text(textwrap.dedent(toml))
    return root


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("opus: warning:")]


def listing(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return {record["name"]: record for record in json.loads(result.stdout)}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def statuses(stdout: str) -> dict[str, str]:
    """TASK -> STATUS from the summary table `opus run` prints."""
    rows = stdout.splitlines()
    start = next(i for i, row in enumerate(rows) if row.split()[:2] == ["TASK", "STATUS"])
    found = {}
    for row in rows[start + 1 :]:
        cells = row.split()
        if (
            len(cells) >= 4
            and cells[2].isdigit()
            and cells[1]
            in (
                "succeeded",
                "failed",
                "skipped",
                "timed_out",
                "cancelled",
                "restored",
            )
        ):
            found[cells[0]] = cells[1]
    return found


# -- 1. a good plugin -----------------------------------------------------------------------


def test_a_good_plugin_is_enabled_and_lists_what_it_provides_and_its_hooks(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    env = env_for(tmp_path)
    result = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    good = listing(result)["good"]
    assert good == {
        "name": "good",
        "version": "1.0",
        "distribution": "opus-good",
        "provides": {
            "runners": ["careful"],
            "persistence": [],
            "loggers": [],
            "processors": ["Stamp"],
        },
        "hooks": ["opus_register_processors", "opus_register_runners", "opus_task_finished"],
        "status": "enabled",
        "error": None,
        "builtin": False,
    }
    assert warnings(result) == []

    table = opus("plugins", "list", cwd=tmp_path, env=env)
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if line.startswith("good "))
    assert "opus-good" in row and "enabled" in row
    assert "runners: careful" in row and "processors: Stamp" in row
    assert "opus_task_finished" in row

    root = project(tmp_path, GOOD_PROJECT)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, run.stderr
    assert statuses(run.stdout) == {"one": "succeeded", "two": "succeeded"}
    assert lines(root / "good-finished.log") == ["one succeeded", "two succeeded"]


# -- 2. broken plugins beside a good one ------------------------------------------------------


def only_itself_is_broken(tmp_path: Path, source: str, *expected: str) -> dict[str, Any]:
    """Install `good` and `broken` (from `source`); check that only `broken` is affected.

    `broken` is listed as `error` with every `expected` fragment in its error,
    one warning names it, and `opus plugins list`, `opus run` of a
    configuration that needs only `good`, and `opus --help` all exit 0.
    """
    install(tmp_path, "good", GOOD)
    install(tmp_path, "broken", source)
    env = env_for(tmp_path)

    result = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    plugins = listing(result)
    broken = plugins["broken"]
    assert broken["status"] == "error", broken
    for fragment in expected:
        assert fragment in (broken["error"] or ""), (fragment, broken["error"])
    assert plugins["good"]["status"] == "enabled"
    assert plugins["good"]["provides"]["runners"] == ["careful"]
    assert {n for n, p in plugins.items() if p["status"] != "enabled"} == {"broken"}
    assert "Traceback" not in result.stderr
    [warning] = result.stderr.splitlines()  # one line, and a warning
    assert warning.startswith("opus: warning: ")
    assert "'broken'" in warning and "opus-broken" in warning
    assert expected[0] in warning

    table = opus("plugins", "list", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("broken "))
    assert "error: " in row

    root = project(tmp_path, GOOD_PROJECT)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert statuses(run.stdout) == {"one": "succeeded", "two": "succeeded"}
    assert "Traceback" not in run.stderr
    assert len([w for w in warnings(run) if "'broken'" in w]) == 1, run.stderr

    helped = opus("--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "Traceback" not in helped.stderr
    return broken


def test_a_plugin_raising_at_import_breaks_only_itself(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        "raise RuntimeError('boom at import')\n",
        "RuntimeError: boom at import",
    )


def test_a_plugin_calling_sys_exit_at_import_breaks_only_itself(tmp_path: Path) -> None:
    only_itself_is_broken(tmp_path, "import sys\nsys.exit(3)\n", "SystemExit", "3")


def test_a_registration_hook_raising_system_exit_breaks_only_its_plugin(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_register_runners():
            raise SystemExit("no runners for you")
        """,
        "opus_register_runners failed",
        "SystemExit",
    )


def test_a_misspelt_registration_hook_breaks_only_its_plugin(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl
        from opus_core.runners import SequentialRunner

        class Typo(SequentialRunner):
            name = "typo"

        @hookimpl
        def opus_register_runner():
            return [Typo]
        """,
        "unknown hook 'opus_register_runner'",
    )


def test_a_misspelt_lifecycle_hook_breaks_only_its_plugin(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_task_finishd(task, result):
            pass
        """,
        "unknown hook 'opus_task_finishd'",
    )


def test_a_hookimpl_with_an_argument_the_hookspec_lacks_breaks_only_its_plugin(
    tmp_path: Path,
) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_task_finished(task, outcome):
            pass
        """,
        # pluggy's own explanation
        "Argument(s) {'outcome'} are declared in the hookimpl but can not be found in the hookspec",
    )


def test_a_registration_hook_that_raises_breaks_only_its_plugin(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_register_runners():
            raise ValueError("no runners today")
        """,
        "opus_register_runners failed: ValueError: no runners today",
    )


def test_a_registration_hook_returning_a_string_breaks_only_its_plugin(tmp_path: Path) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_register_runners():
            return "careful"
        """,
        "opus_register_runners failed",
        "'careful'",
    )


def test_a_registration_hook_returning_a_non_runner_class_breaks_only_its_plugin(
    tmp_path: Path,
) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl

        class NotARunner:
            name = "imposter"

        @hookimpl
        def opus_register_runners():
            return [NotARunner]
        """,
        "opus_register_runners failed",
        "not a Runner subclass",
    )


def test_a_registration_hook_returning_a_runner_without_a_name_breaks_only_its_plugin(
    tmp_path: Path,
) -> None:
    only_itself_is_broken(
        tmp_path,
        """
        from opus_core import hookimpl
        from opus_core.runners import Runner

        class Nameless(Runner):  # Runner.name is ""
            def submit(self, fn, /, *args, **kwargs):
                raise NotImplementedError

            def shutdown(self, wait=True):
                pass

        @hookimpl
        def opus_register_runners():
            return [Nameless]
        """,
        "opus_register_runners failed",
        "Nameless has no `name`",
    )


TWIN = """
from opus_core import hookimpl
from opus_core.runners import SequentialRunner

class Twin(SequentialRunner):
    name = "twin"

@hookimpl
def opus_register_runners():
    return [Twin]
"""


def test_two_plugins_providing_one_runner_name_is_an_error_naming_both_when_it_is_configured(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "twin-a", TWIN)
    install(tmp_path, "twin-b", TWIN)
    env = env_for(tmp_path)

    listed = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    plugins = listing(listed)
    assert plugins["good"]["status"] == "enabled"
    assert plugins["good"]["provides"]["runners"] == ["careful"]
    assert opus("plugins", "list", cwd=tmp_path, env=env).returncode == 0
    assert opus("--help", cwd=tmp_path, env=env).returncode == 0

    root = project(tmp_path, GOOD_PROJECT)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)

    (root / "opus.toml").write_text(GOOD_PROJECT.replace('"careful"', '"twin"'))
    message = one_line_error(opus("run", cwd=root, env=env))
    assert "'twin'" in message
    assert "opus-twin-a" in message and "opus-twin-b" in message


def test_debug_shows_the_plugins_own_import_traceback(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(
        tmp_path,
        "broken",
        """
        def explode():
            raise RuntimeError("boom in the plugin")

        explode()
        """,
    )
    result = opus("--debug", "plugins", "list", cwd=tmp_path, env=env_for(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    frames = [
        line.strip() for line in result.stderr.splitlines() if line.strip().startswith("File ")
    ]
    plugin_file = str(tmp_path / "site" / "broken.py")
    # the innermost frames are the plugin's: the module body, then explode()
    assert frames[-2:] == [
        f'File "{plugin_file}", line 5, in <module>',
        f'File "{plugin_file}", line 3, in explode',
    ], result.stderr
    assert "RuntimeError: boom in the plugin" in result.stderr
    assert "PluginError" not in result.stderr


# -- 3. a configuration that needs the broken plugin ---------------------------------------------

FRAGILE = """
from opus_core import TaskProcessor, hookimpl
from opus_core.runners import SequentialRunner

raise RuntimeError("fragile cannot start")

class Fragile(SequentialRunner):
    name = "fragile"

class Shatter(TaskProcessor):
    kind = "Shatter"

@hookimpl
def opus_register_runners():
    return [Fragile]

@hookimpl
def opus_register_processors():
    return [Shatter]
"""


def test_configuring_a_runner_only_a_broken_plugin_provides_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "fragile", FRAGILE)
    root = project(tmp_path, GOOD_PROJECT.replace('"careful"', '"fragile"'))
    message = one_line_error(opus("run", cwd=root, env=env_for(tmp_path)))
    assert "runner 'fragile'" in message or "runner named 'fragile'" in message
    assert "plugin 'fragile'" in message
    assert "RuntimeError: fragile cannot start" in message


def test_a_task_kind_only_a_broken_plugin_provides_is_one_line_naming_it(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "fragile", FRAGILE)
    root = project(
        tmp_path,
        """
        [opus]
        persistence = "memory"

        [[tasks]]
        kind = "Shatter"
        version = "v1"
        metadata = { name = "glass" }
        """,
    )
    message = one_line_error(opus("run", cwd=root, env=env_for(tmp_path)))
    assert "'Shatter'" in message
    assert "plugin 'fragile'" in message
    assert "RuntimeError: fragile cannot start" in message


# -- 4. lifecycle hooks that raise during a run -----------------------------------------------


def test_a_raising_lifecycle_hook_is_reported_once_and_the_run_goes_on(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(
        tmp_path,
        "grumpy",
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_task_finished(task, result):
            raise RuntimeError("grumpy about " + result.task_id)
        """,
    )
    install(
        tmp_path,
        "quitter",
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_task_started(task, attempt):
            raise SystemExit(4)
        """,
    )
    root = project(
        tmp_path,
        GOOD_PROJECT
        + """
[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "three", dependencies = ["two"] }
""",
    )
    run = opus("run", "-v", cwd=root, env=env_for(tmp_path))
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert statuses(run.stdout) == {"one": "succeeded", "two": "succeeded", "three": "succeeded"}
    assert "3 succeeded" in run.stdout  # the summary line
    assert lines(root / "ran.log") == ["one", "two", "three"]
    # the other plugins' implementations of the same hooks still ran
    assert lines(root / "good-finished.log") == [
        "one succeeded",
        "two succeeded",
        "three succeeded",
    ]
    output = (run.stdout + run.stderr).splitlines()
    grumpy = [line for line in output if "grumpy" in line]
    assert len(grumpy) == 1, output  # reported once, not once per task
    assert "plugin 'grumpy'" in grumpy[0] and "opus_task_finished" in grumpy[0]
    assert "RuntimeError" in grumpy[0]
    quitter = [line for line in output if "quitter" in line]
    assert len(quitter) == 1, output
    assert "plugin 'quitter'" in quitter[0] and "opus_task_started" in quitter[0]
    assert "SystemExit" in quitter[0]
    assert "Traceback" not in run.stderr + run.stdout


# -- 5. pluggy's semantics through real plugins ------------------------------------------------

APPEND = """
def append(word):
    with open("order.log", "a") as log:
        log.write(word + "\\n")
"""


def test_tryfirst_and_both_kinds_of_wrapper_order_the_hook_calls(tmp_path: Path) -> None:
    install(
        tmp_path,
        "plain",
        APPEND
        + """
from opus_core import hookimpl
from opus_core.runners import SequentialRunner

class Plainly(SequentialRunner):
    name = "plainly"

@hookimpl
def opus_register_runners():
    return [Plainly]

@hookimpl
def opus_task_finished(task):
    append("plain")
""",
    )
    install(
        tmp_path,
        "early",
        APPEND
        + """
from opus_core import hookimpl

@hookimpl(tryfirst=True)
def opus_task_finished(task):
    append("early")
""",
    )
    install(
        tmp_path,
        "wrap",
        APPEND
        + """
from opus_core import hookimpl

@hookimpl(wrapper=True)
def opus_task_finished(task):
    append("wrap-before")
    result = yield
    append("wrap-after")
    return result

@hookimpl(wrapper=True)
def opus_register_runners():
    runners = yield
    append("wrap-runners")
    return runners
""",
    )
    install(
        tmp_path,
        "oldwrap",
        APPEND
        + """
from opus_core import hookimpl

@hookimpl(hookwrapper=True)
def opus_task_finished(task):
    append("old-before")
    outcome = yield
    outcome.get_result()
    append("old-after")
""",
    )
    install(tmp_path, "good", GOOD)
    env = env_for(tmp_path)
    plugins = listing(opus("plugins", "list", "--json", cwd=tmp_path, env=env))
    for name in ("plain", "early", "wrap", "oldwrap", "good"):
        assert plugins[name]["status"] == "enabled", plugins[name]
    assert plugins["plain"]["provides"]["runners"] == ["plainly"]
    assert plugins["good"]["provides"]["runners"] == ["careful"]
    assert "opus_register_runners" in plugins["wrap"]["hooks"]
    (tmp_path / "order.log").unlink()

    root = project(
        tmp_path,
        """
        [opus]
        runner = "plainly"
        persistence = "memory"

        [[tasks]]
        kind = "Stamp"
        version = "v1"
        metadata = { name = "only" }
        """,
    )
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert statuses(run.stdout) == {"only": "succeeded"}
    order = lines(root / "order.log")
    assert "wrap-runners" in order  # the registration wrapper ran and changed nothing
    calls = [word for word in order if word != "wrap-runners"]
    assert sorted(calls) == sorted(
        ["old-before", "wrap-before", "early", "plain", "wrap-after", "old-after"]
    ), order
    position = calls.index
    assert position("early") < position("plain")  # tryfirst before a plain implementation
    for wrapper in ("wrap", "old"):  # each wrapper encloses both plain implementations
        assert position(f"{wrapper}-before") < position("early")
        assert position("plain") < position(f"{wrapper}-after")
    # the two wrappers nest
    first = calls[0].removesuffix("-before")
    assert calls[-1] == f"{first}-after", calls


# -- 6. disabling plugins ----------------------------------------------------------------------


def test_disable_plugins_disables_without_importing_and_warns_about_unknown_names(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    install(
        tmp_path,
        "touchy",
        """
        open("touchy-was-imported", "w").close()
        raise RuntimeError("touchy must not be imported")
        """,
    )
    install(
        tmp_path,
        "slow",
        """
        from opus_core import hookimpl
        from opus_core.runners import SequentialRunner

        class Slowpoke(SequentialRunner):
            name = "slowpoke"

        @hookimpl
        def opus_register_runners():
            return [Slowpoke]
        """,
    )
    env = env_for(tmp_path)
    root = project(
        tmp_path,
        GOOD_PROJECT.replace("[opus]\n", '[opus]\ndisable_plugins = ["touchy", "slow", "goood"]\n'),
    )
    result = opus("plugins", "list", "--json", cwd=root, env=env)
    plugins = listing(result)
    assert plugins["touchy"]["status"] == "disabled"
    assert plugins["touchy"]["error"] is None
    assert plugins["slow"]["status"] == "disabled"
    assert plugins["good"]["status"] == "enabled"
    assert not (root / "touchy-was-imported").exists()
    [warning] = warnings(result)  # about the misspelt name only, none about touchy
    assert "'goood'" in warning and "disable_plugins" in warning
    assert "good" in warning.split("'goood'", 1)[1]  # names the installed plugins
    assert "touchy" not in warning.split("installed", 1)[0]

    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert not (root / "touchy-was-imported").exists()
    assert "touchy must not be imported" not in run.stderr + run.stdout
    assert not any(w.startswith("opus: warning: plugin 'touchy'") for w in warnings(run))

    (root / "opus.toml").write_text(
        GOOD_PROJECT.replace('"careful"', '"slowpoke"').replace(
            "[opus]\n", '[opus]\ndisable_plugins = ["touchy", "slow"]\n'
        )
    )
    message = one_line_error(opus("run", cwd=root, env=env))
    assert "'slowpoke'" in message and "disable" in message and "'slow'" in message


def test_a_disabled_plugin_is_not_imported_to_explain_an_unknown_runner_name(
    tmp_path: Path,
) -> None:
    # SPEC, Configuration: disable_plugins are "entry-point names not to load"
    install(tmp_path, "touchy", 'open("touchy-was-imported", "w").close()\n')
    root = project(
        tmp_path,
        GOOD_PROJECT.replace('"careful"', '"nosuch"').replace(
            "[opus]\n", '[opus]\ndisable_plugins = ["touchy"]\n'
        ),
    )
    message = one_line_error(opus("run", cwd=root, env=env_for(tmp_path)))
    assert "no runner named 'nosuch'" in message
    assert not (root / "touchy-was-imported").exists()


def test_opus_disable_plugin_autoload_loads_no_entry_points(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "touchy", 'open("touchy-was-imported", "w").close()\nraise SystemExit(9)\n')
    result = opus(
        "plugins",
        "list",
        "--json",
        cwd=tmp_path,
        env=env_for(tmp_path, OPUS_DISABLE_PLUGIN_AUTOLOAD="1"),
    )
    assert list(listing(result)) == ["builtin", "builtin.commands"]
    assert result.stderr == ""
    assert not (tmp_path / "touchy-was-imported").exists()


# -- 7. how entry points are found ---------------------------------------------------------------


def test_egg_info_distributions_and_entry_points_with_attributes_and_extras_are_loaded(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "foo_plugin.py").write_text(
        textwrap.dedent(
            """
            from opus_core import hookimpl
            from opus_core.runners import SequentialRunner

            class Foo(SequentialRunner):
                name = "foo"

            @hookimpl
            def opus_register_runners():
                return [Foo]
            """
        )
    )
    egg = site / "foo-1.0-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: foo\nVersion: 1.0\n")
    (egg / "entry_points.txt").write_text("[opus]\nfoo = foo_plugin\n")

    (site / "attr_plugin.py").write_text(
        textwrap.dedent(
            """
            from opus_core import hookimpl
            from opus_core.runners import SequentialRunner

            class Attr(SequentialRunner):
                name = "attr"

            class _Plugin:
                @hookimpl
                def opus_register_runners(self):
                    return [Attr]

            plugin = _Plugin()
            """
        )
    )
    info = site / "opus_attr-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opus-attr\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[opus]\nattr = attr_plugin:plugin [fancy]\n")

    result = opus("plugins", "list", "--json", cwd=tmp_path, env=env_for(tmp_path))
    plugins = listing(result)
    assert warnings(result) == []
    foo, attr = plugins["foo"], plugins["attr"]
    assert (foo["status"], foo["distribution"], foo["version"]) == ("enabled", "foo", "1.0")
    assert foo["provides"]["runners"] == ["foo"]
    assert (attr["status"], attr["distribution"], attr["version"]) == (
        "enabled",
        "opus-attr",
        "2.0",
    )
    assert attr["provides"]["runners"] == ["attr"]
    assert attr["hooks"] == ["opus_register_runners"]


# -- 8. commands and plugins named on the command line -------------------------------------------


def test_a_plugin_adds_a_command_that_shows_in_help_and_runs(tmp_path: Path) -> None:
    install(
        tmp_path,
        "hello",
        """
        from opus_core import hookimpl

        def hello(args):
            print(f"hello, {args.name}!")
            return 0

        @hookimpl
        def opus_register_commands(commands):
            parser = commands.add("hello", hello, help="greet someone from a plugin")
            parser.add_argument("--name", default="world")
        """,
    )
    env = env_for(tmp_path)
    helped = opus("--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "hello" in helped.stdout and "greet someone from a plugin" in helped.stdout
    said = opus("hello", "--name", "opus", cwd=tmp_path, env=env)
    assert (said.returncode, said.stdout, said.stderr) == (0, "hello, opus!\n", "")


LOOSE = """
from opus_core import hookimpl
from opus_core.runners import SequentialRunner

class Loose(SequentialRunner):
    name = "loose"

@hookimpl
def opus_register_runners():
    return [Loose]
"""


def test_p_and_opus_plugins_load_a_module_that_is_not_installed(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "loose_plugin.py").write_text(LOOSE)
    env = env_for(tmp_path, PYTHONPATH=str(loose))

    without = listing(opus("plugins", "list", "--json", cwd=tmp_path, env=env))
    assert "loose_plugin" not in without

    by_option = listing(
        opus("-p", "loose_plugin", "plugins", "list", "--json", cwd=tmp_path, env=env)
    )
    by_env = listing(
        opus("plugins", "list", "--json", cwd=tmp_path, env={**env, "OPUS_PLUGINS": "loose_plugin"})
    )
    for plugins in (by_option, by_env):
        loaded = plugins["loose_plugin"]
        assert loaded["status"] == "enabled", loaded
        assert loaded["provides"]["runners"] == ["loose"]
        assert loaded["builtin"] is False


def test_a_module_both_installed_and_in_opus_plugins_is_registered_once(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD, entry_point="goodie")
    env = env_for(tmp_path, OPUS_PLUGINS="good")
    result = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    plugins = listing(result)
    assert [n for n, p in plugins.items() if p["distribution"] == "opus-good" or n == "good"] == [
        "goodie"
    ]
    assert plugins["goodie"]["status"] == "enabled"
    assert warnings(result) == []
    root = project(tmp_path, GOOD_PROJECT)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    # its opus_task_finished was called once per task, not twice
    assert lines(root / "good-finished.log") == ["one succeeded", "two succeeded"]


# -- 9. which tasks run, and which are restored ----------------------------------------------------

PIPELINE = """
[opus]
runner = "careful"
persistence = "memory"

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "build" }

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "deploy", dependencies = ["build"] }

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "benchmark", labels = { tier = "slow" } }

[[tasks]]
kind = "Stamp"
version = "v1"
metadata = { name = "lint" }
"""


def test_opus_modify_tasks_drops_tasks_and_opus_run_name_selects_with_dependencies(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    install(
        tmp_path,
        "fast",
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_modify_tasks(tasks, command, context):
            tasks[:] = [t for t in tasks if t.meta.labels.get("tier") != "slow"]
        """,
    )
    env = env_for(tmp_path)
    root = project(tmp_path, PIPELINE)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert statuses(run.stdout) == {
        "build": "succeeded",
        "deploy": "succeeded",
        "lint": "succeeded",
    }
    assert sorted(lines(root / "ran.log")) == ["build", "deploy", "lint"]

    (root / "ran.log").unlink()
    selected = opus("run", "-v", "deploy", cwd=root, env=env)
    assert selected.returncode == 0, (selected.stdout, selected.stderr)
    assert statuses(selected.stdout) == {"build": "succeeded", "deploy": "succeeded"}
    assert lines(root / "ran.log") == ["build", "deploy"]

    message = one_line_error(opus("run", "deploi", cwd=root, env=env))
    assert "'deploi'" in message and "did you mean 'deploy'" in message


MAKE = """
from pathlib import Path

from opus_core import TaskProcessor, hookimpl


class Copy(TaskProcessor):
    kind = "Copy"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with open("copies.log", "a") as log:
            log.write(task.task_id + "\\n")
        Path(task.spec["output"]).write_text(Path(task.spec["input"]).read_text().upper())
        return {}


@hookimpl
def opus_register_processors():
    return [Copy]


@hookimpl
def opus_task_restore(task):
    if task.kind != "Copy":
        return None
    src, out = Path(task.spec["input"]), Path(task.spec["output"])
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return {}
    return None
"""


def test_a_make_style_opus_task_restore_skips_up_to_date_tasks(tmp_path: Path) -> None:
    install(tmp_path, "make", MAKE)
    env = env_for(tmp_path)
    root = project(
        tmp_path,
        """
        [opus]
        persistence = "memory"

        [[tasks]]
        kind = "Copy"
        version = "v1"
        metadata = { name = "shout" }
        spec = { input = "in.txt", output = "out.txt" }
        """,
    )
    source = root / "in.txt"
    source.write_text("hello\n")
    then = time.time() - 100
    os.utime(source, (then, then))

    first = opus("run", "-v", cwd=root, env=env)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert statuses(first.stdout) == {"shout": "succeeded"}
    assert (root / "out.txt").read_text() == "HELLO\n"

    second = opus("run", "-v", cwd=root, env=env)
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert statuses(second.stdout) == {"shout": "restored"}
    assert lines(root / "copies.log") == ["shout"]  # the processor did not run again

    source.write_text("hello again\n")
    later = time.time() + 100
    os.utime(source, (later, later))
    third = opus("run", "-v", cwd=root, env=env)
    assert third.returncode == 0, (third.stdout, third.stderr)
    assert statuses(third.stdout) == {"shout": "succeeded"}
    assert lines(root / "copies.log") == ["shout", "shout"]
    assert (root / "out.txt").read_text() == "HELLO AGAIN\n"


def resumed_twice(tmp_path: Path, persistence: str) -> None:
    install(tmp_path, "good", GOOD)
    env = env_for(tmp_path)
    root = project(tmp_path, GOOD_PROJECT.replace('persistence = "memory"\n', persistence))
    first = opus("run", "-v", cwd=root, env=env)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert statuses(first.stdout) == {"one": "succeeded", "two": "succeeded"}
    resumed = opus("run", "-v", "--resume", cwd=root, env=env)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert statuses(resumed.stdout) == {"one": "restored", "two": "restored"}
    assert lines(root / "ran.log") == ["one", "two"]  # not run again


def test_resume_reports_tasks_that_already_succeeded_as_restored(tmp_path: Path) -> None:
    # opus-plugin-file-persistence is installed with the project's development environment
    resumed_twice(tmp_path, 'persistence = "file"\n[persistence.file]\ndirectory = ".opus-state"\n')


# -- 10. [plugins.NAME] options ---------------------------------------------------------------------

GREETER = """
from dataclasses import dataclass
from pathlib import Path

from opus_core import hookimpl


@dataclass
class Options:
    greeting: str = "hi"
    times: int = 1


@hookimpl
def opus_plugin_options():
    return Options


@hookimpl
def opus_configure(options):
    Path("configured.txt").write_text(f"{type(options).__name__} {options.greeting} x{options.times}")
"""


def test_plugin_options_from_the_plugins_table_reach_opus_configure(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "greeter", GREETER)
    root = project(
        tmp_path,
        GOOD_PROJECT
        + """
[plugins.greeter]
greeting = "hello"
times = 3
""",
    )
    run = opus("run", "-v", cwd=root, env=env_for(tmp_path))
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert (root / "configured.txt").read_text() == "Options hello x3"


def test_bad_plugin_options_are_one_line_naming_the_file_and_the_key(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "greeter", GREETER)
    env = env_for(tmp_path)
    cases = {
        "[plugins.greeter]\ncolour = 'red'\n": "plugins.greeter.colour",
        "[plugins.greeter]\ntimes = 'three'\n": "plugins.greeter.times",
        "[plugins.greetr]\ngreeting = 'hello'\n": "plugins.greetr",
    }
    for table, key in cases.items():
        root = project(tmp_path, GOOD_PROJECT + table)
        message = one_line_error(opus("run", cwd=root, env=env))
        assert str(root / "opus.toml") in message, message
        assert key in message, message
        assert not (root / "configured.txt").exists()
    assert "did you mean 'greeter'" in message  # the last: a plugin that does not exist


# -- 11. tracing hook calls in Python --------------------------------------------------------------


class Echo(TaskProcessor):
    kind = "Echo"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {task.task_id: True}


class Quiet:
    @hookimpl
    def opus_task_started(self, task, attempt):  # type: ignore[no-untyped-def]
        pass

    @hookimpl
    def opus_task_finished(self, task, result):  # type: ignore[no-untyped-def]
        pass


class Finished:
    @hookimpl
    def opus_task_finished(self, task, result):  # type: ignore[no-untyped-def]
        pass


def test_opus_task_started_is_called_only_when_a_plugin_implements_it() -> None:
    called: list[str] = []
    for plugins in ([Finished()], [Quiet()]):
        tasks = Tasks(plugins=plugins, logger=LoggerWrapper("CRITICAL"))
        tasks.register_task_processor(Echo())
        tasks.add_task(Task("Echo", "v1", metadata={"name": "a"}))
        undo = tasks.manager().pm.add_hookcall_monitoring(
            lambda name, impls, kwargs: called.append(name), lambda *args: None
        )
        assert tasks.process_context().ok
        undo()
        assert called.count("opus_task_finished") == 1
        assert called.count("opus_task_started") == (0 if plugins[0].__class__ is Finished else 1)
        called.clear()


def test_hook_call_monitoring_sees_the_lifecycle_hooks_of_process_context() -> None:
    tasks = Tasks(plugins=[Quiet()], logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Echo())
    tasks.add_task(Task("Echo", "v1", metadata={"name": "a"}))
    tasks.add_task(Task("Echo", "v1", metadata={"name": "b", "dependencies": ["a"]}))
    before_calls: list[tuple[str, dict[str, Any]]] = []
    after_calls: list[str] = []

    def before(hook_name, hook_impls, kwargs):  # type: ignore[no-untyped-def]
        before_calls.append((hook_name, dict(kwargs)))

    def after(outcome, hook_name, hook_impls, kwargs):  # type: ignore[no-untyped-def]
        outcome.get_result()
        after_calls.append(hook_name)

    undo = tasks.manager().pm.add_hookcall_monitoring(before, after)
    try:
        assert tasks.process_context().ok
    finally:
        undo()
    names = [name for name, _ in before_calls]
    started = [kw["task"].task_id for name, kw in before_calls if name == "opus_task_started"]
    finished = [kw["task"].task_id for name, kw in before_calls if name == "opus_task_finished"]
    assert started == ["a", "b"] and finished == ["a", "b"]
    assert names.index("opus_run_started") < names.index("opus_task_started")
    assert names[-1] == "opus_run_finished"
    assert after_calls.count("opus_task_finished") == 2


# -- what an attack on the plugin system found ----------------------------------------------------

THIEF = """
from opus_core import hookimpl


@hookimpl
def opus_register_commands(commands):
    commands.add("run", lambda args: print("hijacked run") or 0, help="not opus's run")
"""


def test_a_plugin_cannot_take_a_core_command(tmp_path: Path) -> None:
    install(tmp_path, "thief", THIEF)
    root = project(tmp_path, "")
    env = env_for(tmp_path)
    ran = opus("run", "--dry-run", cwd=root, env=env)
    assert ran.returncode == 5 and "hijacked" not in ran.stdout, (ran.stdout, ran.stderr)
    assert "plan for command 'apply'" in ran.stdout  # opus's run: nothing in scope
    records = listing(opus("plugins", "list", "--json", cwd=root, env=env))
    assert records["thief"]["status"] == "error"
    assert "already has a command 'run'" in records["thief"]["error"]
    assert records["builtin"]["status"] == "enabled"


def test_a_second_distribution_with_the_same_entry_point_name_leaves_the_first_working(
    tmp_path: Path,
) -> None:
    install(tmp_path, "good", GOOD)
    make_distribution(tmp_path / "site", "opus-copy", "copy_of_good", GOOD, entry_point="good")
    make_distribution(tmp_path / "site", "opus-fake-core", "fake_core", GOOD, entry_point="builtin")
    root = project(tmp_path, GOOD_PROJECT)
    env = env_for(tmp_path)
    run = opus("run", "-v", cwd=root, env=env)
    assert run.returncode == 0, run.stderr
    assert lines(root / "good-finished.log") == ["one succeeded", "two succeeded"]
    records = json.loads(opus("plugins", "list", "--json", cwd=root, env=env).stdout)
    good = [r for r in records if r["name"] == "good"]
    assert sorted(r["status"] for r in good) == ["enabled", "error"]
    assert next(r for r in good if r["status"] == "enabled")["provides"]["runners"] == ["careful"]
    core = [r for r in records if r["name"] == "builtin"]
    assert [r["status"] for r in core] == ["enabled", "error"]  # the core, then the impostor
    assert "sequential" in core[0]["provides"]["runners"]


def test_the_core_plugin_cannot_be_disabled(tmp_path: Path) -> None:
    root = project(tmp_path, '[opus]\ndisable_plugins = ["builtin"]\n')
    result = opus("plugins", "list", "--json", cwd=root, env=env_for(tmp_path))
    assert listing(result)["builtin"]["status"] == "enabled"
    assert warnings(result) == [
        "opus: warning: [opus] disable_plugins names 'builtin': the core's own plugins stay enabled"
    ]


LOUD_WRAPPERS = """
from opus_core import hookimpl


@hookimpl(wrapper=True)
def opus_task_finished(task):
    raise RuntimeError("before yield")
    yield


@hookimpl(hookwrapper=True)
def opus_task_started(task):
    yield
    raise RuntimeError("after yield")
"""


def test_a_lifecycle_wrapper_that_raises_silences_no_one_else(tmp_path: Path) -> None:
    install(tmp_path, "good", GOOD)
    install(tmp_path, "loud", LOUD_WRAPPERS)
    root = project(tmp_path, GOOD_PROJECT)
    run = opus("run", "-v", cwd=root, env=env_for(tmp_path))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert lines(root / "good-finished.log") == ["one succeeded", "two succeeded"]
    assert "task 'one' succeeded" in output and "task 'two' succeeded" in output
    assert (
        output.count("plugin 'loud' failed in opus_task_finished: RuntimeError: before yield") == 1
    )
    assert output.count("plugin 'loud' failed in opus_task_started: RuntimeError: after yield") == 1
    assert "Warning" not in output  # no PluggyTeardownRaisedWarning


REJECTING_OPTIONS = """
from opus_core import hookimpl


class Options:
    def __init__(self, level: int = 1):
        raise RuntimeError("options init exploded")


@hookimpl
def opus_plugin_options():
    return Options
"""


def test_options_a_plugin_rejects_are_one_line_naming_it(tmp_path: Path) -> None:
    install(tmp_path, "picky", REJECTING_OPTIONS)
    root = project(tmp_path, "[plugins.picky]\nlevel = 2\n")
    message = one_line_error(opus("run", cwd=root, env=env_for(tmp_path)))
    assert "plugins.picky: plugin 'picky' rejected its options: RuntimeError: options" in message


ODD_IMPLS = """
from opus_core import hookimpl


class Odd:
    @hookimpl
    @staticmethod
    def opus_task_finished(task):
        with open("static.log", "a") as log:
            log.write(task.task_id + "\\n")
"""


def test_hookimpls_marked_on_a_staticmethod_are_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace: dict[str, Any] = {}
    exec(ODD_IMPLS, namespace)
    monkeypatch.chdir(tmp_path)

    class Noop(TaskProcessor):
        kind = "Noop"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return {}

    tasks = Tasks(logger=LoggerWrapper("ERROR"), plugins=[namespace["Odd"]()])
    tasks.register_task_processor(Noop())
    tasks.add_task(Task("Noop", "v1", metadata={"name": "n"}))
    assert tasks.process_context().ok
    assert lines(tmp_path / "static.log") == ["n"]


GARBAGE_LOADER = """
from opus_core import hookimpl


@hookimpl
def opus_load_tasks(path):
    if path.suffix == ".int":
        return 5
    if path.suffix == ".gen":
        return explode(path)
    return None


def explode(path):
    raise RuntimeError("the loader broke halfway")
    yield
"""


def test_a_task_loader_returning_garbage_is_one_line_naming_the_file(tmp_path: Path) -> None:
    install(tmp_path, "garbage", GARBAGE_LOADER)
    env = env_for(tmp_path)
    for suffix, expected in (
        ("int", "opus_load_tasks returned int for"),
        ("gen", "plugin 'garbage' failed in opus_load_tasks for"),
    ):
        root = project(tmp_path, f'[opus]\nmanifests = ["tasks.{suffix}"]\n', directory=suffix)
        (root / f"tasks.{suffix}").write_text("")
        message = one_line_error(opus("run", cwd=root, env=env))
        assert expected in message and f"tasks.{suffix}" in message, message


SLOW_IMPORT = """
import os, time

open(os.environ["SLOW_IMPORT_STARTED"], "w").close()
time.sleep(30)
"""


def test_ctrl_c_while_plugins_load_is_exit_130_without_a_traceback(tmp_path: Path) -> None:
    import signal

    from cli_helpers import OPUS, interruptible
    from harness import until

    install(tmp_path, "slow", SLOW_IMPORT)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    started = tmp_path / "import-started"
    environment.update(env_for(tmp_path, SLOW_IMPORT_STARTED=str(started)))
    process = interruptible([str(OPUS), "plugins", "list"], cwd=tmp_path, env=environment)
    assert until(started.exists)  # the plugin is being imported
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "opus: interrupted" in stderr


HELLO_WITH_OPTIONS = """
from dataclasses import dataclass

from opus_core import hookimpl

GREETING = "unset"


@dataclass
class Options:
    greeting: str = "hello"


@hookimpl
def opus_plugin_options():
    return Options


@hookimpl
def opus_configure(options):
    global GREETING
    GREETING = options.greeting


def hello(args):
    print(GREETING)
    return 0


@hookimpl
def opus_register_commands(commands):
    commands.add("hello", hello, help="say the configured greeting")
"""


def test_a_plugins_own_command_gets_its_options(tmp_path: Path) -> None:
    install(tmp_path, "hello", HELLO_WITH_OPTIONS)
    root = project(tmp_path, '[plugins.hello]\ngreeting = "bonjour"\n')
    result = opus("hello", cwd=root, env=env_for(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == "bonjour", result.stderr


def test_a_wrapper_on_a_firstresult_hook_works_and_a_bad_str_breaks_nothing(tmp_path: Path) -> None:
    from opus_core.plugin.manager import PluginManager

    seen: list[str] = []

    class Wrapping:
        @hookimpl(wrapper=True)
        def opus_load_tasks(self, path):
            seen.append(f"before {path.name}")
            result = yield
            seen.append("after")
            return result

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no words")

    class Raising:
        @hookimpl
        def opus_register_runners(self):
            raise BadStr()

    manager = PluginManager(autoload=False)
    manager.register(Wrapping(), name="wrapping")
    manager.register(Raising(), name="raising")
    manifest = tmp_path / "tasks.json"
    manifest.write_text('[{"kind": "K", "version": "v1", "metadata": {"name": "k"}}]')
    assert [t.task_id for t in manager.load_tasks(manifest)] == ["k"]
    assert seen == ["before tasks.json", "after"]
    infos = {info.name: info for info in manager.plugins()}
    assert infos["wrapping"].status == "enabled"
    assert infos["raising"].status == "error"
    assert "BadStr (its message could not be shown: RuntimeError)" in (infos["raising"].error or "")
    assert "sequential" in manager.runners()


def test_main_called_in_process_leaves_the_signal_handlers_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from opus_core.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.chdir(tmp_path)
    main(["plugins", "list", "--json"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
