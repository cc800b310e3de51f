"""The core's own commands: the plugin `builtin.commands`, which adds them through
`opus_register_commands` like any plugin's.

Each command's module declares its arguments beside its handler (`add_command`); this
plugin lists the modules, in the order `opus --help` shows them. The command line
registers it (`opus_core.cli.context.command_line_plugins`), so the engine and the core's
other plugin, `builtin`, never import the command line. The parser is built at every
start, so these modules keep their top-level imports light: what a command needs to run
is imported by its handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import opus_core.cli.cache as cache
import opus_core.cli.completion as completion
import opus_core.cli.config as config
import opus_core.cli.graph as graph
import opus_core.cli.plugins as plugins
import opus_core.cli.report as report
import opus_core.cli.run as run
import opus_core.cli.runs as runs
import opus_core.cli.state as state
import opus_core.cli.tasks as tasks
from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.cli import Commands

PLUGIN_NAME = "builtin.commands"
"""The name `opus plugins list` shows this plugin under."""

COMMAND_MODULES = (run, tasks, graph, report, plugins, config, state, runs, cache, completion)
"""The modules of the core's commands, each with its `add_command(commands)`."""


@hookimpl(tryfirst=True)
def opus_register_commands(commands: Commands) -> None:
    """The core's commands: first, so no plugin can take their names."""
    add_core_commands(commands)


def add_core_commands(commands: Commands) -> None:
    """`run`, `tasks`, `graph`, `report`, `plugins`, `config`, `state`, `runs`, `why`,
    `cache` and `completion`."""
    for module in COMMAND_MODULES:
        module.add_command(commands)
