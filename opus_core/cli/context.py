"""`CommandContext`: what a command's handler is given — the arguments, the configuration,
the plugins, and (built when first asked for) the configured persistence and engine.

The dispatch of `opus` makes one per command, checks `[plugins.*]` and hands
each plugin its options (`opus_configure`) through it before the handler runs,
so every command sees its plugins configured once, the same way. Nothing here
imports the engine until a handler asks for it.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opus_core.assembly import Assembly
    from opus_core.config import Config
    from opus_core.engine import Tasks
    from opus_core.persistence import StatePersistence
    from opus_core.plugin.manager import PluginManager


class CommandContext:
    """What the handler of an `opus` command receives, if it asks for it.

    A handler whose first parameter is annotated `CommandContext` is called
    with one; any other handler is called with the `argparse.Namespace` of
    the parsed arguments (`context.args`), as before contexts existed.

    `config`, `persistence` and `tasks()` are built on first use and kept, so
    a command pays only for what it reads: `opus runs list` never loads a
    task, `opus tasks` never opens the persistence.
    """

    def __init__(self, args: argparse.Namespace, plugins: PluginManager | None = None) -> None:
        self.args = args
        """The parsed command line: the command's own arguments and `--config`, `--debug`."""
        self._plugins = plugins
        self._engines: dict[str | None, Tasks] = {}

    @cached_property
    def plugins(self) -> PluginManager:
        """The plugin manager of the command: every plugin `opus` loaded, the core's included."""
        if self._plugins is not None:
            return self._plugins
        return command_line_plugins(disabled=self.config.opus("disable_plugins", ()))

    @cached_property
    def config(self) -> Config:
        """The merged configuration: the project's `opus.toml` (from `--config`, else
        `$OPUS_CONFIG`, else the nearest one) over the user's file."""
        from opus_core.config import load_config

        return load_config(getattr(self.args, "config", None))

    @cached_property
    def assembly(self) -> Assembly:
        """The configuration and the plugins together: what builds runners, persistence,
        loggers and tasks, checking each name and option table it reads."""
        from opus_core.assembly import Assembly

        return Assembly(self.config, manager=self.plugins)

    def configure(self) -> None:
        """Check `[plugins.*]` and hand each plugin its options (`opus_configure`), once.

        The dispatch calls this before every command that reads the project (all
        but those added with `configure=False`); a handler need not.
        """
        self.assembly.configure_plugins()

    @cached_property
    def persistence(self) -> StatePersistence:
        """The configured persistence, with its `[persistence.NAME]` options; built once,
        and the one `tasks()` uses."""
        return self.assembly.persistence()

    def tasks(self, runner: str | None = None) -> Tasks:
        """The engine of the configuration: plugins, runner, persistence, logger, processors
        and every task; built on first call (once per `runner`, a runner name overriding
        `[opus] runner`). Raises `ConfigError` naming the file and key of anything wrong."""
        engine = self._engines.get(runner)
        if engine is None:
            from opus_core.engine import Tasks

            engine = self._engines[runner] = Tasks.from_assembly(
                self.assembly, runner=runner, persistence=self.persistence
            )
        return engine


def command_line_plugins(
    disabled: Iterable[str] = (), autoload: bool | None = None
) -> PluginManager:
    """The plugin manager of `opus`: what any `PluginManager` loads, and the core's commands
    (`opus_core.cli.commands`) as the core plugin `builtin.commands`, right after `builtin`.

    `disabled` and `autoload` are `PluginManager`'s: entry-point names not to load
    (`[opus] disable_plugins`), and False to load none (the core's own alone).
    """
    import opus_core.cli.commands as commands
    from opus_core.plugin.manager import PluginManager

    return PluginManager(disabled, autoload, core={commands.PLUGIN_NAME: commands})


def takes_context(handler: Any) -> bool:
    """Whether `handler`'s first parameter is annotated `CommandContext` (a class or a name)."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    annotation = parameters[0].annotation
    if isinstance(annotation, str):  # `from __future__ import annotations`, or a quoted name
        return annotation.rpartition(".")[2] == CommandContext.__name__
    return isinstance(annotation, type) and issubclass(annotation, CommandContext)
