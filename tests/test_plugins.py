"""The plugin system from Python: hookspecs, in-process plugins, configuration-built engines."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from opus_core import (
    ConfigError,
    LoggerWrapper,
    PluginError,
    Task,
    TaskProcessor,
    Tasks,
    hookimpl,
    hookspecs,
)
from opus_core.assembly import Assembly
from opus_core.config import load_config
from opus_core.persistence import MemoryPersistence
from opus_core.plugin.manager import PluginManager
from opus_core.runners import SequentialRunner

HOOKS = [name for name in dir(hookspecs) if name.startswith("opus_")]


def test_every_hookspec_is_documented_and_typed() -> None:
    assert len(HOOKS) == 16
    for name in HOOKS:
        function = getattr(hookspecs, name)
        assert inspect.getdoc(function) and len(inspect.getdoc(function)) > 40, name
        assert "return" in inspect.get_annotations(function), name


def test_builtins_are_registered_through_the_hooks() -> None:
    manager = PluginManager(autoload=False)
    [builtin] = manager.plugins()
    assert builtin.name == "builtin" and builtin.builtin and builtin.distribution == "opus-core"
    assert builtin.provides["runners"] == ["sequential", "process", "processpool"]
    assert "opus_register_runners" in builtin.hooks
    assert set(manager.runners()) == {"sequential", "process", "processpool"}


class Echo(TaskProcessor):
    kind = "Echo"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        if task.spec.get("fail"):
            raise RuntimeError("echo failed")
        return {task.task_id: True}


class Watcher:
    """An in-process plugin recording the lifecycle hooks."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    @hookimpl
    def opus_run_started(self, plan):
        self.calls.append(("run_started", plan.command, plan.context))

    @hookimpl
    def opus_task_started(self, task, attempt):
        self.calls.append(("task_started", task.task_id, attempt))

    @hookimpl
    def opus_task_retrying(self, task, attempt, error, delay):
        self.calls.append(("task_retrying", task.task_id, attempt, error))

    @hookimpl
    def opus_task_finished(self, result):  # a hookimpl may take fewer arguments
        self.calls.append(("task_finished", result.task_id, str(result.status)))

    @hookimpl
    def opus_run_finished(self, report):
        self.calls.append(("run_finished", report.ok))


def test_in_process_plugins_get_the_lifecycle_hooks() -> None:
    watcher = Watcher()
    tasks = Tasks(plugins=[watcher], logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Echo())
    tasks.add_task(Task("Echo", "v1", spec={"fail": True}, metadata={"name": "bad", "retries": 1}))
    tasks.process_context("apply", "ctx")
    assert watcher.calls == [
        ("run_started", "apply", "ctx"),
        ("task_started", "bad", 1),
        ("task_retrying", "bad", 1, "RuntimeError: echo failed"),
        ("task_started", "bad", 2),
        ("task_finished", "bad", "failed"),
        ("run_finished", False),
    ]


def test_a_raising_hook_is_logged_with_its_plugin_and_the_run_goes_on(capsys) -> None:
    class Broken:
        @hookimpl
        def opus_task_finished(self, task, result):
            raise ValueError("bug in plugin")

    watcher = Watcher()
    tasks = Tasks(plugins=[Broken(), watcher])
    tasks.register_task_processor(Echo())
    tasks.add_task(Task("Echo", "v1", metadata={"name": "a"}))
    tasks.add_task(Task("Echo", "v1", metadata={"name": "b", "dependencies": ["a"]}))
    assert tasks.process_context().ok
    out = capsys.readouterr().out
    assert "plugin 'Broken' failed in opus_task_finished: ValueError: bug in plugin" in out
    assert ("task_finished", "b", "succeeded") in watcher.calls


def test_in_process_plugin_provides_a_runner_and_processors() -> None:
    class Counting(SequentialRunner):
        name = "counting"
        submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            type(self).submitted += 1
            return super().submit(fn, *args, **kwargs)

    plugin = SimpleNamespace(
        opus_register_runners=hookimpl(lambda: [Counting]),
        opus_register_processors=hookimpl(lambda: [Echo]),
        __name__="counting-plugin",
    )
    tasks = Tasks(plugins=[plugin], runner="counting", logger=LoggerWrapper("CRITICAL"))
    tasks.add_task(Task("Echo", "v1", metadata={"name": "x"}))  # Echo came from the plugin
    assert tasks.process_context().ok
    assert Counting.submitted == 1


def test_plugin_returning_something_that_is_not_a_runner(capsys) -> None:
    plugin = SimpleNamespace(opus_register_runners=hookimpl(lambda: [dict]), __name__="odd")
    manager = PluginManager(autoload=False)
    manager.register(plugin)
    assert set(manager.runners()) == {
        "sequential",
        "process",
        "processpool",
    }  # the rest keeps working
    odd = next(info for info in manager.plugins() if info.name == "odd")
    assert odd.status == "error"
    assert odd.error == (
        "opus_register_runners failed: PluginError: returned <class 'dict'>, "
        "which is not a Runner subclass"
    )
    assert f"plugin 'odd' is broken: {odd.error}" in capsys.readouterr().err


def test_two_in_process_plugins_with_one_runner_name() -> None:
    class Again(SequentialRunner):
        name = "sequential"

    plugin = SimpleNamespace(opus_register_runners=hookimpl(lambda: [Again]), __name__="again")
    manager = PluginManager(autoload=False)
    manager.register(plugin)
    assert manager.runners()["process"]  # other names are unaffected
    with pytest.raises(PluginError, match="runner 'sequential' is provided by both") as raised:
        manager.runners()["sequential"]
    assert "plugin 'builtin' (opus-core" in str(raised.value)
    assert "plugin 'again'" in str(raised.value)


class Pathy(MemoryPersistence):
    name = "pathy"

    def __init__(self, directory: Path | None = None, keep: int = 3) -> None:
        super().__init__()
        self.directory = directory
        self.keep = keep


PATHY = SimpleNamespace(opus_register_persistence=hookimpl(lambda: [Pathy]), __name__="pathy")


def test_relative_paths_are_resolved_against_the_file_that_holds_them(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config_file = tmp_path / "conf" / "opus.toml"
    config_file.write_text(
        '[opus]\npersistence = "pathy"\n[persistence.pathy]\ndirectory = "state"\nkeep = 5\n'
    )
    persistence = Assembly(load_config(config_file, user=False), [PATHY]).persistence()
    assert isinstance(persistence, Pathy)
    assert persistence.directory == tmp_path / "conf" / "state"
    assert persistence.keep == 5


def test_option_types_come_from_the_class_signature(tmp_path: Path) -> None:
    config_file = tmp_path / "opus.toml"
    config_file.write_text('[persistence.pathy]\nkeep = "lots"\n')
    with pytest.raises(
        ConfigError, match=r"persistence.pathy.keep must be a whole number, got 'lots'"
    ):
        Assembly(load_config(config_file, user=False), [PATHY]).check()


def test_from_config_builds_the_whole_engine(tmp_path: Path) -> None:
    (tmp_path / "procs.py").write_text(
        "from opus_core import TaskProcessor\n"
        "class Hello(TaskProcessor):\n"
        "    kind = 'Hello'\n"
        "    def process_task(self, task, command, context, key_value_store, state_persistence):\n"
        "        return {'greeting': task.spec['text']}\n"
    )
    config_file = tmp_path / "opus.toml"
    config_file.write_text(
        '[opus]\nrunner = "process"\nprocessors = ["procs:Hello"]\nfail_fast = true\nlog_level = "ERROR"\n'
        "[runners.process]\nmax_workers = 3\n"
        '[[tasks]]\nkind = "Hello"\nversion = "v1"\nmetadata = { name = "hi" }\nspec = { text = "hello" }\n'
    )
    tasks = Tasks.from_config(config_file)
    assert tasks.fail_fast is True
    assert tasks.runner_options == {"max_workers": 3}
    assert tasks.logger.level == 40
    report = tasks.process_context()
    assert report.ok and tasks.key_value_store.store == {"greeting": "hello"}


class Shaped(MemoryPersistence):
    name = "shaped"

    def __init__(
        self,
        pair: tuple[str, int] = ("a", 1),
        ids: set[int] | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.pair, self.ids, self.limits = pair, ids, limits


SHAPED = SimpleNamespace(opus_register_persistence=hookimpl(lambda: [Shaped]), __name__="shaped")


@pytest.mark.parametrize(
    ("table", "good"),
    [
        ('pair = ["a", 1]', True),  # one hint per position of a tuple
        ('pair = ["a", "b"]', False),
        ('pair = ["a"]', False),
        ("ids = [1, 2]", True),
        ('ids = "x"', False),  # a string is not a set of numbers
        ('ids = [1, "x"]', False),
        ("limits = { db = 2 }", True),
        ('limits = { db = "two" }', False),  # the values of a table are checked too
    ],
)
def test_option_types_check_tuples_sets_and_table_values(
    tmp_path: Path, table: str, good: bool
) -> None:
    config_file = tmp_path / "opus.toml"
    config_file.write_text(f"[persistence.shaped]\n{table}\n")
    assembly = Assembly(load_config(config_file, user=False), [SHAPED])
    if good:
        assembly.check()
    else:
        with pytest.raises(ConfigError, match=r"persistence\.shaped\.\w+ must be "):
            assembly.check()
