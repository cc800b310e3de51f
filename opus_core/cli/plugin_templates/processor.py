"""The `processor` kind: an example processor with options and a lifecycle hook."""

from __future__ import annotations

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
by an engine (`opus_project.tasks()`) and by the `opus` command
(`opus_project.run("run")`, in the test's process; `process=True` for a
process of its own).
"""
