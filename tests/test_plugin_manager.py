"""The plugin manager: pluggy's semantics kept, failures attributed to their plugin through
pluggy's own records (`HookImpl.plugin_name`), the plugin API version, and hook tracing.

In-process through `PluginManager` where the manager is the point; through the real `opus`
command where what a user sees on the command line is.
"""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path
from typing import Any

import pluggy
import pytest
from cli_helpers import make_distribution, one_line_error, opus

import opus_core
from opus_core import LoggerWrapper, PluginError, Task, TaskProcessor, Tasks, hookimpl
from opus_core.plugin.manager import AUTOLOAD_ENV, TRACE_ENV, PluginManager
from opus_core.runners import SequentialRunner


def module(name: str, source: str) -> types.ModuleType:
    """A plugin module made from `source`, as if imported."""
    plugin = types.ModuleType(name)
    exec(textwrap.dedent(source), plugin.__dict__)
    return plugin


def manager(*plugins: tuple[str, object]) -> PluginManager:
    found = PluginManager(autoload=False)
    for name, plugin in plugins:
        found.register(plugin, name=name)
    return found


class Spare(SequentialRunner):
    name = "spare"


class Added(SequentialRunner):
    name = "added"


# -- pluggy's semantics, through the guards -----------------------------------------------------


def test_pluggy_sees_each_implementation_with_its_own_arguments_and_plugin_name() -> None:
    seen: list[tuple[str, object]] = []

    class Partial:
        @hookimpl
        def opus_task_retrying(self, attempt, delay):  # type: ignore[no-untyped-def]
            seen.append(("partial", (attempt, delay)))

    class Defaulted:
        @hookimpl
        def opus_task_retrying(self, task, error, extra="kept"):  # type: ignore[no-untyped-def]
            seen.append(("defaulted", (task, error, extra)))

    plugins = manager(("partial", Partial()), ("defaulted", Defaulted()))
    impls = plugins.hook.opus_task_retrying.get_hookimpls()
    assert {impl.plugin_name: impl.argnames for impl in impls} == {
        "partial": ("attempt", "delay"),
        "defaulted": ("task", "error"),
    }
    plugins.task_retrying("a task", 2, "boom", 0.5)
    assert sorted(seen) == [("defaulted", ("a task", "boom", "kept")), ("partial", (2, 0.5))]


def test_tryfirst_answers_first_in_a_firstresult_hook(tmp_path: Path) -> None:
    early = module(
        "early",
        """
        from opus_core import Task, hookimpl

        @hookimpl(tryfirst=True)
        def opus_load_tasks(path):
            return [Task("Early", "v1", metadata={"name": path.stem})]
        """,
    )
    late = module(
        "late",
        """
        from opus_core import hookimpl

        @hookimpl
        def opus_load_tasks(path):
            raise AssertionError("a firstresult hook stops at the first answer")
        """,
    )
    path = tmp_path / "tasks.json"
    path.write_text("[]")
    loaded = manager(("late", late), ("early", early)).load_tasks(path)
    assert [(task.kind, task.task_id) for task in loaded or []] == [("Early", "tasks")]


def test_what_a_wrapper_adds_to_a_registration_hook_is_its_plugins() -> None:
    class Adding:
        @hookimpl(wrapper=True)
        def opus_register_runners(self):  # type: ignore[no-untyped-def]
            answers = yield
            return [*answers, [Added]]

    class Plain:
        @hookimpl
        def opus_register_runners(self):  # type: ignore[no-untyped-def]
            return [Spare]

    plugins = manager(("adding", Adding()), ("plain", Plain()))
    assert plugins.runners()["added"] is Added and plugins.runners()["spare"] is Spare
    assert plugins.provider("runners", "added").name == "adding"
    assert plugins.provider("runners", "spare").name == "plain"
    assert plugins.provider("runners", "sequential").name == "builtin"


def test_a_wrapper_adding_garbage_to_a_registration_hook_breaks_only_its_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Spoiling:
        @hookimpl(hookwrapper=True)
        def opus_register_runners(self):  # type: ignore[no-untyped-def]
            outcome = yield
            outcome.force_result([*outcome.get_result(), "not a runner"])

    plugins = manager(("spoiling", Spoiling()))
    assert "sequential" in plugins.runners()
    [spoiling] = [info for info in plugins.plugins() if info.name == "spoiling"]
    assert spoiling.status == "error"
    assert "a wrapper of opus_register_runners returned 'not a runner'" in (spoiling.error or "")
    assert "plugin 'spoiling' is broken" in capsys.readouterr().err


def test_a_wrapper_raising_in_a_hook_that_decides_what_runs_is_an_error_naming_it() -> None:
    class Picky:
        @hookimpl(wrapper=True)
        def opus_modify_tasks(self, tasks):  # type: ignore[no-untyped-def]
            yield
            raise KeyError("no such task")

    with pytest.raises(PluginError, match="plugin 'picky' failed in opus_modify_tasks: KeyError"):
        manager(("picky", Picky())).modify_tasks([], "apply", "default")


def test_a_plain_implementation_raising_in_opus_task_restore_is_an_error_naming_it() -> None:
    class Restoring:
        @hookimpl
        def opus_task_restore(self, task):  # type: ignore[no-untyped-def]
            raise SystemExit(3)

    plugins = manager(("restoring", Restoring()))
    with pytest.raises(PluginError) as raised:
        plugins.restore(Task("K", "v1", metadata={"name": "k"}), "apply", "default", None)  # type: ignore[arg-type]
    assert str(raised.value) == "plugin 'restoring' failed in opus_task_restore: SystemExit: code 3"


def test_an_answer_of_the_wrong_type_from_opus_task_restore_names_the_plugin() -> None:
    class Restoring:
        @hookimpl
        def opus_task_restore(self, task):  # type: ignore[no-untyped-def]
            return ["not", "a", "dict"]

    plugins = manager(("restoring", Restoring()))
    with pytest.raises(PluginError, match="plugin 'restoring': opus_task_restore returned list"):
        plugins.restore(Task("K", "v1", metadata={"name": "k"}), "apply", "default", None)  # type: ignore[arg-type]


class Echo(TaskProcessor):
    kind = "Echo"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {task.task_id: True}


def test_failing_lifecycle_wrappers_are_reported_once_each_and_the_others_still_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    finished: list[str] = []

    class Loud:
        @hookimpl(hookwrapper=True)
        def opus_task_finished(self, task):  # type: ignore[no-untyped-def]
            raise RuntimeError("old-style, before its yield")
            yield

        @hookimpl(wrapper=True)
        def opus_task_started(self, task):  # type: ignore[no-untyped-def]
            yield
            raise RuntimeError("new-style, after its yield")

    class Counting:
        @hookimpl
        def opus_task_finished(self, result):  # type: ignore[no-untyped-def]
            finished.append(result.task_id)

    tasks = Tasks(plugins=[Loud(), Counting()], logger=LoggerWrapper("ERROR"))
    tasks.register_task_processor(Echo())
    for name in ("a", "b", "c"):
        tasks.add_task(Task("Echo", "v1", metadata={"name": name}))
    assert tasks.process_context().ok
    assert finished == ["a", "b", "c"]
    out = capsys.readouterr().out
    for hook, error in (
        ("opus_task_started", "new-style, after its yield"),
        ("opus_task_finished", "old-style, before its yield"),
    ):
        assert out.count(f"plugin 'Loud' failed in {hook}: RuntimeError: {error}") == 1, out
    assert "Traceback" not in out


def test_a_wrapper_that_breaks_the_protocol_is_reported_and_the_call_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    called: list[str] = []

    class Sloppy:
        @hookimpl(wrapper=True)
        def opus_run_started(self):  # type: ignore[no-untyped-def]
            yield
            yield

        @hookimpl(wrapper=True)
        def opus_run_finished(self):  # type: ignore[no-untyped-def]
            return
            yield

    class Plain:
        @hookimpl
        def opus_run_started(self):  # type: ignore[no-untyped-def]
            called.append("started")

        @hookimpl
        def opus_run_finished(self):  # type: ignore[no-untyped-def]
            called.append("finished")

    plugins = manager(("sloppy", Sloppy()), ("plain", Plain()))
    plugins.run_started(None)  # type: ignore[arg-type]
    plugins.run_finished(None)  # type: ignore[arg-type]
    assert called == ["started", "finished"]
    assert capsys.readouterr().err.splitlines() == [
        "opus: warning: plugin 'sloppy' failed in opus_run_started: RuntimeError: the wrapper yielded twice",
        "opus: warning: plugin 'sloppy' failed in opus_run_finished: RuntimeError: the wrapper did not yield",
    ]


def test_a_failing_lifecycle_hook_goes_to_the_engines_logger_naming_plugin_and_hook(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Grumpy:
        @hookimpl
        def opus_run_finished(self, report):  # type: ignore[no-untyped-def]
            raise ValueError("grumpy")

    tasks = Tasks(plugins=[Grumpy()], logger=LoggerWrapper("ERROR"))
    tasks.register_task_processor(Echo())
    tasks.add_task(Task("Echo", "v1", metadata={"name": "only"}))
    assert tasks.process_context().ok
    out = capsys.readouterr().out
    assert out.count("plugin 'Grumpy' failed in opus_run_finished: ValueError: grumpy") == 1


def test_a_wrapper_declared_on_a_plain_function_is_invalid_as_pluggy_says() -> None:
    class NotAGenerator:
        @hookimpl(wrapper=True)
        def opus_task_finished(self, task):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(PluginError, match="not a generator function"):
        manager(("not-a-generator", NotAGenerator()))


# -- the plugin API version ---------------------------------------------------------------------


def test_opus_declares_its_plugin_api_version() -> None:
    assert opus_core.PLUGIN_API == "1.0"


@pytest.mark.parametrize("requires", [">=1.0,<2", "~=1.0", "==1.*", ""])
def test_a_plugin_supporting_this_plugin_api_is_registered(requires: str) -> None:
    plugin = module("fits", f'OPUS_PLUGIN_API_REQUIRES = "{requires}"\n')
    assert manager().register(plugin, name="fits").status == "enabled"


@pytest.mark.parametrize(
    ("requires", "reason"),
    [
        (
            '">=2"',
            "it supports opus plugin API >=2 (OPUS_PLUGIN_API_REQUIRES), and opus "
            f"{opus_core.__version__} has plugin API 1.0; install a release of the plugin made for it",
        ),
        (
            '"version one"',
            "OPUS_PLUGIN_API_REQUIRES = 'version one' is not a version specifier; "
            "write one such as '>=1.0,<2'",
        ),
        ("2", "OPUS_PLUGIN_API_REQUIRES = 2 is not a version specifier"),
    ],
)
def test_a_plugin_outside_this_plugin_api_cannot_be_registered(requires: str, reason: str) -> None:
    plugin = module(
        "unfit",
        f"""
        from opus_core import hookimpl

        OPUS_PLUGIN_API_REQUIRES = {requires}

        @hookimpl
        def opus_task_finished(task):
            raise AssertionError("never registered, never called")
        """,
    )
    plugins = manager()
    with pytest.raises(PluginError) as raised:
        plugins.register(plugin, name="unfit")
    assert str(raised.value).startswith(f"plugin 'unfit' cannot be registered: {reason}")
    assert "unfit" not in {info.name for info in plugins.plugins()}


TOO_NEW = """
from opus_core import hookimpl
from opus_core.runners import SequentialRunner

OPUS_PLUGIN_API_REQUIRES = ">=2.0"


class Future(SequentialRunner):
    name = "future"


@hookimpl
def opus_register_runners():
    return [Future]
"""


def test_a_plugin_for_another_plugin_api_is_an_error_row_a_warning_and_exit_2_when_needed(
    tmp_path: Path,
) -> None:
    make_distribution(tmp_path / "site", "opus-future", "future", TOO_NEW)
    env = {"PYTHONPATH": str(tmp_path / "site"), "XDG_STATE_HOME": str(tmp_path / "state")}
    reason = (
        "it supports opus plugin API >=2.0 (OPUS_PLUGIN_API_REQUIRES), and opus "
        f"{opus_core.__version__} has plugin API 1.0; install a release of the plugin made for it"
    )
    listed = opus("plugins", "list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    [future] = [r for r in json.loads(listed.stdout) if r["name"] == "future"]
    assert (future["status"], future["error"], future["provides"]["runners"]) == (
        "error",
        reason,
        [],
    )
    table = opus("plugins", "list", cwd=tmp_path, env=env)
    assert table.returncode == 0
    [row] = [line for line in table.stdout.splitlines() if line.startswith("future ")]
    assert "error: it supports opus plugin API >=2.0" in row

    (tmp_path / "opus.toml").write_text('[opus]\npersistence = "memory"\n')
    tasks = opus("tasks", cwd=tmp_path, env=env)  # asks nothing of the plugin
    assert tasks.returncode in (0, 5), tasks.stderr
    warnings = [line for line in tasks.stderr.splitlines() if "warning" in line]
    assert warnings == [f"opus: warning: plugin 'future' (opus-future 1.0) is broken: {reason}"]

    (tmp_path / "opus.toml").write_text('[opus]\nrunner = "future"\npersistence = "memory"\n')
    error = one_line_error(opus("run", cwd=tmp_path, env=env))
    assert "no runner named 'future'" in error
    assert f"plugin 'future' (opus-future 1.0) is broken: {reason}" in error


# -- tracing ------------------------------------------------------------------------------------


def test_opus_trace_plugins_prints_each_hook_call_its_plugins_and_its_duration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Watching:
        @hookimpl(tryfirst=True)
        def opus_task_finished(self, task):  # type: ignore[no-untyped-def]
            pass

        @hookimpl
        def opus_register_runners(self):  # type: ignore[no-untyped-def]
            return [Spare]

    monkeypatch.setenv(TRACE_ENV, "1")
    monkeypatch.setenv(AUTOLOAD_ENV, "1")  # the core and this plugin only
    tasks = Tasks(plugins=[Watching()], logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Echo())
    tasks.add_task(Task("Echo", "v1", metadata={"name": "one"}))
    assert tasks.process_context().ok
    err = capsys.readouterr().err.splitlines()
    assert all(line.startswith("opus: trace: ") for line in err), err
    calls = [line.removeprefix("opus: trace: ") for line in err]
    runners = calls.index(next(c for c in calls if c.startswith("opus_register_runners ")))
    assert calls[runners + 1 : runners + 3] == [
        "  1. Watching -> Spare",
        "  2. builtin -> SequentialRunner, ProcessRunner, ProcessPoolRunner",
    ]
    finished = next(i for i, c in enumerate(calls) if c.startswith("opus_task_finished "))
    header = calls[finished].split()
    assert header[0] == "opus_task_finished" and header[2] == "ms" and float(header[1]) >= 0
    assert calls[finished + 1] == "  1. Watching (tryfirst)"
    assert calls[finished + 2].startswith("  2. builtin.log")
    assert any(c.startswith("opus_run_started ") for c in calls)
    assert any(c.startswith("opus_run_finished ") for c in calls)


def test_the_trace_flag_of_opus_prints_the_hook_calls_of_a_command(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text('[opus]\npersistence = "memory"\n')
    result = opus("--trace-plugins", "tasks", cwd=tmp_path)
    assert result.returncode in (0, 5), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("opus: trace: ")]
    imports = [line for line in lines if line.startswith("opus: trace: importing plugin ")]
    assert "opus: trace: importing plugin 'file' (opus_plugin_file_persistence)" in imports
    trace = [line for line in lines if line not in imports]
    assert trace[0].startswith("opus: trace: opus_register_commands ")
    assert trace[1] == "opus: trace:   1. builtin.commands (tryfirst)"
    plain = opus("tasks", cwd=tmp_path)
    assert "opus: trace:" not in plain.stderr


def test_tracing_uses_pluggys_call_monitoring_and_leaves_results_alone() -> None:
    events: list[str] = []

    def before(hook: str, impls: Any, kwargs: Any) -> None:
        events.append(f"before {hook}")

    def after(outcome: pluggy.Result[Any], hook: str, impls: Any, kwargs: Any) -> None:
        events.append(f"after {hook}")

    plugins = manager()
    undo = plugins.pm.add_hookcall_monitoring(before, after)
    try:
        assert "sequential" in plugins.runners()
    finally:
        undo()
    assert events[:2] == ["before opus_register_runners", "after opus_register_runners"]


ENGINE_ALONE = """
import sys
from opus_core import Tasks
tasks = Tasks.from_config(sys.argv[1])
report = tasks.process_context(command="apply", context="default")
print(report.ok)
print(*[info.name for info in tasks.manager().plugins()])
print(*sorted(m for m in sys.modules if m.startswith("opus_core.cli")))
"""


def test_the_engine_runs_without_the_command_line_or_its_commands(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = tmp_path / "opus.toml"
    config.write_text('[opus]\npersistence = "memory"\n')
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_ALONE, str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, AUTOLOAD_ENV: "1"},
    )
    assert done.returncode == 0, done.stderr
    ok, plugins, command_line = done.stdout.split("\n")[:3]
    assert ok == "True"
    assert plugins.split()[0] == "builtin" and "builtin.commands" not in plugins.split()
    assert command_line == ""
