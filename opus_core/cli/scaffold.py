"""`opus plugins new NAME`: write a complete plugin distribution that installs and passes its test.

The distribution is laid out like the project's own plugins
(`plugins/opus-plugin-colorlog`): a `pyproject.toml` with the `opus` entry
point, one package, a README showing the `opus.toml` section it reads, and its
tests, which use `opus_core.testing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from opus_core.cli.context import CommandContext
from opus_core.errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class PluginNames:
    """Every name the distribution of plugin `name` uses."""

    name: str
    """The entry-point name: what `opus plugins list` shows and `[plugins.<name>]` configures."""

    @property
    def distribution(self) -> str:
        """`opus-plugin-NAME`: the distribution, and the folder it is written to."""
        return f"opus-plugin-{self.name}"

    @property
    def snake(self) -> str:
        """The name with `-` turned into `_`, fit for modules."""
        return self.name.replace("-", "_")

    @property
    def module(self) -> str:
        """`opus_plugin_NAME`: the package."""
        return f"opus_plugin_{self.snake}"

    @property
    def kind(self) -> str:
        """The example processor's kind (and class name): `<CamelName>Hello`."""
        camel = "".join(part.capitalize() for part in re.split(r"[-_]+", self.name) if part)
        return f"{camel}Hello"


def plugin_names(name: str) -> PluginNames:
    """The names of plugin `name`; `ConfigError` if `name` is not a valid plugin name."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid plugin name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter (e.g. 'hello' or 'slack-notify')"
        )
    if name == "builtin" or name.startswith("builtin."):
        raise ConfigError(f"{name!r} is the name of opus's own plugin; choose another")
    for prefix in ("opus-plugin-", "opus_plugin_"):
        if name.startswith(prefix):
            raise ConfigError(
                f"{name!r} would make a distribution called opus-plugin-{name}; "
                f"give the plugin's own name: {name.removeprefix(prefix)!r}"
            )
    return PluginNames(name)


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "opus plugin '$name': an example processor with options and a lifecycle hook"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["opus-core"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.opus]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
"""

PACKAGE = '''\
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

TESTS = '''\
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

README = """\
# $distribution

An [opus](https://pypi.org/project/opus-core/) plugin, `$name`. It provides
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


def files(names: PluginNames) -> dict[str, str]:
    """The distribution's files: path (relative to its folder) to text."""
    templates = {
        "pyproject.toml": PYPROJECT,
        f"{names.module}/__init__.py": PACKAGE,
        f"tests/test_{names.snake}.py": TESTS,
        "README.md": README,
        ".gitignore": GITIGNORE,
    }
    values = {
        "name": names.name,
        "distribution": names.distribution,
        "module": names.module,
        "kind": names.kind,
    }
    return {path: Template(text).substitute(values) for path, text in templates.items()}


def new(context: CommandContext) -> int:
    """Write `DIR/opus-plugin-NAME/`; refuse to overwrite it without --force."""
    args = context.args
    names = plugin_names(args.name)
    target = Path(args.directory) / names.distribution
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    written = []
    for relative, text in files(names).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    print(f"wrote the plugin {names.name!r} in {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print("next steps:")
    print(f"  cd {target}")
    print("  pip install -e '.[test]'")
    print(f"  opus plugins list    # shows {names.name!r}, providing the processor {names.kind}")
    print("  pytest")
    return 0
