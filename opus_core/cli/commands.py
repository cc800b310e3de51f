"""The core's own commands: the plugin `builtin.commands`, which adds them through
`opus_register_commands` like any plugin's.

Each command's module declares its arguments beside its handler (`add_command`); this
plugin lists the modules, in the order `opus --help` shows them, and the one line each
command has there. The command line registers it
(`opus_core.cli.context.command_line_plugins`), so the engine and the core's other plugin,
`builtin`, never import the command line. The parser is built at every start: only the
module of the command that runs is imported, and it keeps its top-level imports light
(what a command needs to run is imported by its handler).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core.cli import Commands

PLUGIN_NAME = "builtin.commands"
"""The name `opus plugins list` shows this plugin under."""

COMMAND_HELP = {
    "run": "run the tasks of the configuration",
    "tasks": "list the tasks in scope: kind, labels, dependencies",
    "graph": "draw the task graph (Mermaid, DOT or a text tree)",
    "report": "write a run's HTML report: the graph by status and a timeline of every attempt",
    "plugins": "list the installed plugins, or start a new one",
    "config": "show, create or locate opus.toml",
    "state": "what the configured persistence holds",
    "runs": "the history of runs: list, show one, prune",
    "why": "why a task ran or was restored in the last run",
    "cache": "what the file cache keeps",
    "completion": "print a shell completion script (bash or zsh)",
}
"""The core's commands, in the order `opus --help` lists them, each with its one line."""

COMMAND_MODULES = {
    "opus_core.cli.run": ("run",),
    "opus_core.cli.tasks": ("tasks",),
    "opus_core.cli.graph": ("graph",),
    "opus_core.cli.report": ("report",),
    "opus_core.cli.plugins": ("plugins",),
    "opus_core.cli.config": ("config",),
    "opus_core.cli.state": ("state",),
    "opus_core.cli.runs": ("runs",),
    "opus_core.cli.cache": ("why", "cache"),
    "opus_core.cli.completion": ("completion",),
}
"""The modules of the core's commands, each with its `add_command(commands)` adding these."""


@hookimpl(tryfirst=True)
def opus_register_commands(commands: Commands) -> None:
    """The core's commands: first, so no plugin can take their names."""
    add_core_commands(commands)


def add_core_commands(commands: Commands) -> None:
    """`run`, `tasks`, `graph`, `report`, `plugins`, `config`, `state`, `runs`, `why`,
    `cache` and `completion`: the one `commands.wanted` whole (its module imported only
    then), the others listed; every one whole when none is named."""
    wanted = commands.wanted
    for module, names in COMMAND_MODULES.items():
        if wanted is None or wanted in names:
            importlib.import_module(module).add_command(commands)
        else:
            for name in names:
                commands.list(name, COMMAND_HELP[name])
