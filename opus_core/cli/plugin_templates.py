"""The files `opus plugins new NAME --kind KIND` writes, one set of templates per kind.

Each is a `string.Template` over the names of `PluginNames` (`$name`,
`$module`, `$distribution`, `$camel`, `$kind`, `$snake`) and the kind's
`$summary`; a literal dollar is `$$`.
"""

from __future__ import annotations

from dataclasses import dataclass

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "opus plugin '$name': $summary"
readme = "README.md"
requires-python = ">=3.11"
license = "MIT"
dependencies = ["opus-core"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.opus]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
"""

PROCESSOR_PACKAGE = '''\
"""The opus plugin `$name`: an example to edit into your own.

It shows what most plugins do, each through a hook (opus-core's
`docs/hooks.md` lists them all):

* `$kind`, a processor for the tasks of kind `$kind`: it greets
  `spec.name` and publishes the greeting as `greeting` (`opus_register_processors`);
* options read from `[plugins.$name]` in opus.toml (`opus_plugin_options`) and
  handed to the plugin once the configuration is read (`opus_configure`);
* a lifecycle notification as each of its tasks ends (`opus_task_finished`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opus_core import TaskProcessor
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core import KeyValueStore, StatePersistence, Task, TaskResult

__version__ = "0.1.0"

OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"
"""The versions of opus's plugin API this plugin was written for (a PEP 440 specifier)."""


@dataclass
class Options:
    """The options of `[plugins.$name]`; opus checks the table against these fields."""

    greeting: str = "Hello"
    """What `$kind` says before the name."""


settings = Options()
"""The options in effect: the defaults until `opus_configure` hands over the table's."""


class $kind(TaskProcessor):
    """Greets `spec.name` (default "world") and publishes the greeting as `greeting`."""

    kind = "$kind"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> Mapping[str, Any]:
        """Log the greeting and publish it to the tasks that depend on this one."""
        greeting = f"{settings.greeting}, {task.spec.get('name', 'world')}!"
        self.logger.info(greeting)
        return {"greeting": greeting}


@hookimpl
def opus_register_processors() -> Iterable[type[TaskProcessor]]:
    """The processors of this plugin, registered into every engine built from opus.toml."""
    return [$kind]


@hookimpl
def opus_plugin_options() -> type[Options]:
    """The class of this plugin's options, made from `[plugins.$name]`."""
    return Options


@hookimpl
def opus_configure(options: Options) -> None:
    """Keep the options, once per configuration, before any task runs."""
    global settings
    settings = options


@hookimpl
def opus_task_finished(task: Task, result: TaskResult) -> None:
    """Say how each `$kind` task ended (a notification: what it returns is ignored)."""
    if task.kind == $kind.kind:
        print(f"$name: task {result.task_id!r} {result.status}", file=sys.stderr)
'''

PROCESSOR_TESTS = '''\
"""The `$name` plugin: its processor greets, in-process and through the `opus` command.

`opus_project` (from opus-core's `opus_core.testing`) is an opus project in a
temporary folder; the plugin is registered into it, whether or not it is installed.
"""

from __future__ import annotations

import pytest
from opus_core.testing import OpusProject

import $module

TASKS = """
    [[tasks]]
    kind = "$kind"
    version = "v1"
    metadata = { name = "greet" }
    spec = { name = "opus" }
"""


def test_the_processor_publishes_a_greeting(
    opus_project: OpusProject, capsys: pytest.CaptureFixture[str]
) -> None:
    opus_project.register($module, name="$name")
    opus_project.write_config(TASKS)
    tasks = opus_project.tasks()
    report = tasks.process_context()
    assert report.ok, report.summary()
    assert tasks.key_value_store.store["greeting"] == "Hello, opus!"
    assert "$name: task 'greet' succeeded" in capsys.readouterr().err


def test_opus_run_greets_with_the_configured_greeting(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")  # its entry-point name, installed or not
    opus_project.write_config(
        """
        [plugins.$name]
        greeting = "Hi"
        """
        + TASKS
    )
    result = opus_project.run("run")
    assert result.returncode == 0, result.stderr
    assert "Hi, opus!" in result.stdout + result.stderr
'''

PROCESSOR_README = """\
# $distribution

An opus (`opus-core`) plugin, `$name`. It provides
the processor `$kind`, which greets `spec.name` and publishes the greeting as
`greeting` to the tasks that depend on it.

```sh
pip install -e .
opus plugins list        # lists `$name`, providing the processor $kind
```

```toml
[plugins.$name]
greeting = "Hi"          # default: "Hello"

[[tasks]]
kind = "$kind"
version = "v1"
metadata = { name = "greet" }
spec = { name = "opus" }  # `opus run` logs "Hi, opus!"
```

## Tests

```sh
pip install -e '.[test]'
pytest
```

The tests use the `opus_project` fixture of `opus_core.testing`, which
pytest finds through opus-core: an opus project in a temporary folder, run
in-process (`opus_project.tasks()`) and through the real `opus` command
(`opus_project.run("run")`).
"""

GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
"""



API = """\
__version__ = "0.1.0"

OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"
\"""The versions of opus's plugin API this plugin was written for (a PEP 440 specifier).\"""
"""

TESTS_README = """
## Tests

```sh
pip install -e '.[test]'
pytest
```

The tests use opus-core's `opus_core.testing`, which pytest finds through
opus-core: the `opus_project` fixture (an opus project in a temporary folder,
run in-process and through the real `opus` command)$contract.
"""

# -- runner ---------------------------------------------------------------------------------

RUNNER_PACKAGE = (
    '''\
"""The opus plugin `$name`: the runner `$name`, to edit into your own.

`${camel}Runner` runs each task in the caller, one at a time, as opus's own
`sequential` runner does. Make it run tasks elsewhere by overriding `submit`
(opus-core's CONTRIBUTING.md, "Writing a runner"); its tests — opus-core's
`RunnerContract` — say whether it keeps the contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from opus_core.plugin import hookimpl
from opus_core.runners import Runner, SequentialRunner

'''
    + API
    + '''

class ${camel}Runner(SequentialRunner):
    """The runner `$name`: `[opus] runner = "$name"` in opus.toml chooses it."""

    name: ClassVar[str] = "$name"


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The runners of this plugin."""
    return [${camel}Runner]
'''
)

RUNNER_TESTS = '''\
"""The `$name` runner keeps opus's runner contract and is found by opus."""

from __future__ import annotations

import json

from opus_core.testing import OpusProject, RunnerContract

import $module
from $module import ${camel}Runner


class Test${camel}Runner(RunnerContract):
    """opus-core's conformance tests of runners, run against this one."""

    runner_class = ${camel}Runner
    max_workers_option = None  # it runs one task at a time: there is no cap to check


def test_a_function_runs_on_it() -> None:
    run = ${camel}Runner().submit(pow, 2, 10)
    assert run.get_result(timeout=30) == 1024


def test_opus_lists_it_among_the_runners(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    result = opus_project.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    (plugin,) = [p for p in json.loads(result.stdout) if p["name"] == "$name"]
    assert plugin["provides"]["runners"] == ["$name"]
'''

RUNNER_README = """\
# $distribution

An opus (`opus-core`) plugin providing the runner
`$name`.

```sh
pip install -e .
opus plugins list        # lists `$name`, providing the runner $name
```

```toml
[opus]
runner = "$name"
```
""" + TESTS_README.replace("$contract", ", and the runner contract's tests (`RunnerContract`)")

# -- persistence ----------------------------------------------------------------------------

PERSISTENCE_PACKAGE = (
    '''\
"""The opus plugin `$name`: the persistence `$name`, to edit into your own.

`${camel}Persistence` keeps every state in one JSON file, read on each access and
rewritten whole, under a file lock, on each change: simple and safe, and slow
for big projects. Keep it elsewhere by rewriting the
four state methods; its tests — opus-core's `PersistenceContract` — say
whether it keeps the contract.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from opus_core import StatePersistence
from opus_core.persistence import state_folder, to_json
from opus_core.plugin import hookimpl

'''
    + API
    + '''

class ${camel}Persistence(StatePersistence):
    """The persistence `$name`: `[opus] persistence = "$name"` in opus.toml chooses it.

    `path` (from `[persistence.$name]`) is the JSON file; by default
    `$snake.json` in the project's own state folder.
    """

    name: ClassVar[str] = "$name"

    supports_concurrent_processes: ClassVar[bool] = True  # every change holds a file lock

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else state_folder() / "$snake.json"

    def read(self) -> dict[str, Any]:
        """Every identifier and its state, as the file holds them now."""
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The file's contents to change, under a lock that other processes respect; the
        file is written whole (a temporary file, then a rename) when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(json.dumps(data))
            os.replace(temporary, self.path)

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state."""
        return self.read()

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict (a fresh copy either way)."""
        return self.read().get(object_identifier, {})  # type: ignore[no-any-return]

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`.

        `to_json` refuses (naming the identifier) what JSON would not give back as it is.
        """
        value = json.loads(to_json(object_identifier, data))
        with self.changing() as stored:
            stored[object_identifier] = value

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if it had state."""
        with self.changing() as stored:
            return stored.pop(object_identifier, None) is not None


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """The persistence classes of this plugin."""
    return [${camel}Persistence]
'''
)

PERSISTENCE_TESTS = '''\
"""The `$name` persistence keeps opus's persistence contract and keeps what it is given."""

from __future__ import annotations

from pathlib import Path

from opus_core.testing import OpusProject, PersistenceContract

import $module
from $module import ${camel}Persistence


class Test${camel}Persistence(PersistenceContract):
    """opus-core's conformance tests of persistence, run against this one."""

    def make_persistence(self, tmp_path: Path) -> ${camel}Persistence:
        return ${camel}Persistence(path=tmp_path / "state.json")


def test_state_outlives_the_object_that_saved_it(tmp_path: Path) -> None:
    ${camel}Persistence(path=tmp_path / "state.json").save_object_state("a", {"n": 1})
    assert ${camel}Persistence(path=tmp_path / "state.json").get_object_state("a") == {"n": 1}


def test_opus_state_reads_the_file_opus_toml_names(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    opus_project.write_config(
        """
        [opus]
        persistence = "$name"

        [persistence.$name]
        path = "state.json"
        """
    )
    ${camel}Persistence(path=opus_project.path / "state.json").save_object_state("a", {"n": 1})
    result = opus_project.run("state", "show", "a", "--json")
    assert result.returncode == 0, result.stderr
    result.stdout.fnmatch_lines(['*"n": 1*'])
'''

PERSISTENCE_README = """\
# $distribution

An opus (`opus-core`) plugin providing the persistence
`$name`: every state in one JSON file.

```sh
pip install -e .
opus plugins list        # lists `$name`, providing the persistence $name
```

```toml
[opus]
persistence = "$name"

[persistence.$name]
path = ".opus/state.json"   # default: $snake.json in the project's state folder
```
""" + TESTS_README.replace(
    "$contract", ", and the persistence contract's tests (`PersistenceContract`)"
)

# -- loader ---------------------------------------------------------------------------------

LOADER_PACKAGE = (
    '''\
"""The opus plugin `$name`: a task loader for `.jsonl` manifests, to edit into your own.

`[opus] manifests` in opus.toml lists manifest files; opus asks each plugin's
`opus_load_tasks` for their tasks, and the first that answers wins. This one
reads `.jsonl` files — one task per line, as a JSON object with `kind`,
`version`, `metadata` and `spec` — and leaves every other file to others.
"""

from __future__ import annotations

import json
from pathlib import Path

from opus_core import Task
from opus_core.errors import ManifestError
from opus_core.plugin import hookimpl

'''
    + API
    + '''
SUFFIX = ".jsonl"
"""The files this plugin reads."""


@hookimpl
def opus_load_tasks(path: Path) -> list[Task] | None:
    """The tasks of `path` if it is a `.jsonl` file, else None (another plugin's file)."""
    if path.suffix != SUFFIX:
        return None
    tasks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            tasks.append(
                Task(
                    entry["kind"],
                    entry.get("version", "v1"),
                    spec=entry.get("spec"),
                    metadata=entry.get("metadata"),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{path}:{number}: not a task ({exc!r})") from None
    return tasks
'''
)

LOADER_TESTS = '''\
"""The `$name` loader reads `.jsonl` manifests, and leaves other files alone."""

from __future__ import annotations

import json
from pathlib import Path

from opus_core.testing import OpusProject

import $module

PROCESSOR = """
    from opus_core import TaskProcessor
    from opus_core.plugin import hookimpl


    class Greet(TaskProcessor):
        kind = "Greet"

        def process_task(self, task, command, context="default", key_value_store=None,
                         state_persistence=None):
            return {"greeting": "Hello, " + task.spec["name"] + "!"}


    @hookimpl
    def opus_register_processors():
        return [Greet]
"""

MANIFEST = "\\n".join(
    json.dumps(task)
    for task in [
        {"kind": "Greet", "version": "v1", "metadata": {"name": "one"}, "spec": {"name": "a"}},
        {
            "kind": "Greet",
            "metadata": {"name": "two", "dependencies": ["one"]},
            "spec": {"name": "b"},
        },
    ]
)


def test_it_reads_a_task_per_line(tmp_path: Path) -> None:
    (tmp_path / "deploy.jsonl").write_text(MANIFEST + "\\n\\n")
    tasks = $module.opus_load_tasks(tmp_path / "deploy.jsonl")
    assert [task.task_id for task in tasks] == ["one", "two"]
    assert tasks[1].spec == {"name": "b"}


def test_it_leaves_other_files_to_other_plugins(tmp_path: Path) -> None:
    assert $module.opus_load_tasks(tmp_path / "deploy.yaml") is None


def test_opus_runs_the_tasks_of_the_manifests_opus_toml_lists(opus_project: OpusProject) -> None:
    opus_project.write("greet.py", PROCESSOR)
    opus_project.register("greet")
    opus_project.register($module, name="$name")
    opus_project.write("deploy/tasks.jsonl", MANIFEST)
    opus_project.write_config('[opus]\\nmanifests = ["deploy/*.jsonl"]\\n')
    result = opus_project.run("run")
    result.assert_outcomes(succeeded=2)
'''

LOADER_README = """\
# $distribution

An opus (`opus-core`) plugin, `$name`: a task loader
for `.jsonl` manifests — one task per line, as a JSON object with `kind`,
`version`, `metadata` and `spec`.

```sh
pip install -e .
opus plugins list        # lists `$name`, with the hook opus_load_tasks
```

```toml
[opus]
manifests = ["deploy/*.jsonl"]
```
""" + TESTS_README.replace("$contract", "")

# -- command --------------------------------------------------------------------------------

COMMAND_PACKAGE = (
    '''\
"""The opus plugin `$name`: the command `opus $name`, to edit into your own.

A command's handler whose first parameter is annotated `CommandContext` gets
the parsed arguments (`context.args`), the configuration (`context.config`),
the plugins (`context.plugins`) and — built only when asked for — the
configured persistence (`context.persistence`) and the engine
(`context.tasks()`). opus-core's docs/commands.md tells the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opus_core.cli import CommandContext
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.cli import Commands

'''
    + API
    + '''

@hookimpl
def opus_register_commands(commands: Commands) -> None:
    """Add `opus $name`; its module is imported anyway, so the handler is a function."""
    parser = commands.add("$name", $snake, help="how many tasks and runs the project has")
    parser.add_argument("--context", default="default", help="the context (default: default)")


def $snake(context: CommandContext) -> int:
    """Print the project's tasks in scope and the runs recorded; the exit status."""
    config = context.config
    project = config.project if config.project is not None else "no opus.toml"
    plan = context.tasks().plan("apply", context.args.context)
    runs = context.persistence.list_runs()
    print(f"project: {project}")
    print(f"tasks in scope: {len(plan.tasks)}")
    print(f"runs recorded: {len(runs)}")
    return 0
'''
)

COMMAND_TESTS = '''\
"""`opus $name` through the real `opus` command."""

from __future__ import annotations

from opus_core.testing import OpusProject

import $module


def test_it_counts_the_tasks_and_the_runs(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    opus_project.write_config()
    result = opus_project.run("$name")
    assert result.returncode == 0, result.stderr
    result.stdout.fnmatch_lines(["project: *opus.toml", "tasks in scope: 0", "runs recorded: 0"])


def test_opus_help_lists_it(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    result = opus_project.run("--help")
    assert result.returncode == 0, result.stderr
    result.stdout.fnmatch_lines(["*$name*how many tasks and runs the project has*"])
'''

COMMAND_README = """\
# $distribution

An opus (`opus-core`) plugin adding the command
`opus $name`: how many tasks are in scope and how many runs are recorded.

```sh
pip install -e .
opus $name --context prod
```
""" + TESTS_README.replace("$contract", "")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of plugin `opus plugins new` writes: its templates and what it says."""

    summary: str
    """What the plugin is, for `pyproject.toml`'s description and the next steps."""
    package: str
    tests: str
    readme: str


KINDS: dict[str, Kind] = {
    "processor": Kind(
        "an example processor with options and a lifecycle hook",
        PROCESSOR_PACKAGE,
        PROCESSOR_TESTS,
        PROCESSOR_README,
    ),
    "runner": Kind("a runner", RUNNER_PACKAGE, RUNNER_TESTS, RUNNER_README),
    "persistence": Kind(
        "a persistence", PERSISTENCE_PACKAGE, PERSISTENCE_TESTS, PERSISTENCE_README
    ),
    "loader": Kind(
        "a task loader for .jsonl manifests", LOADER_PACKAGE, LOADER_TESTS, LOADER_README
    ),
    "command": Kind("an opus command", COMMAND_PACKAGE, COMMAND_TESTS, COMMAND_README),
}
"""The kinds, by the name `--kind` takes; the first is the default."""
