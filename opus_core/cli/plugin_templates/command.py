"""The `command` kind: an `opus` command using the command context."""

from __future__ import annotations

from opus_core.cli.plugin_templates.common import API, TESTS_README

PACKAGE = (
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

TESTS = '''\
"""`opus $name` through the `opus` command."""

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

README = """\
# $distribution

An opus (`opus-core`) plugin adding the command
`opus $name`: how many tasks are in scope and how many runs are recorded.

```sh
pip install -e .
opus $name --context prod
```
""" + TESTS_README.replace("$contract", "")
