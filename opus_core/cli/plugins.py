"""`opus plugins list`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from opus_core.cli.commands import COMMAND_HELP
from opus_core.cli.parser import Commands, Parser
from opus_core.cli.scaffold import add_command as add_new_command

if TYPE_CHECKING:
    from opus_core.cli.context import CommandContext
    from opus_core.plugin.manager import PluginManager


def add_command(commands: Commands) -> None:
    """`opus plugins list|new`: `list_plugins` handles `list`; `new` is added by
    `opus_core.cli.scaffold`."""
    plugins = commands.add_group("plugins", COMMAND_HELP["plugins"], default="list")
    listing = plugins.add(
        "list",
        list_plugins,
        help="every plugin, built-ins included",
        configure=False,  # lists a plugin whatever its options: it is how one finds out why
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_new_command(plugins)


def commands_by_plugin(manager: PluginManager) -> dict[str, list[str]]:
    """The `opus` commands each plugin adds through `opus_register_commands`, by plugin name
    (each plugin's hook called on its own, through pluggy's `subset_hook_caller`)."""
    manager.load()
    added: dict[str, list[str]] = {}
    plugins = manager.pm.list_name_plugin()
    for name, plugin in plugins:
        if not hasattr(plugin, "opus_register_commands"):
            continue
        others = [p for n, p in plugins if n != name]
        subparsers = argparse.ArgumentParser().add_subparsers()
        commands = Commands(subparsers, Parser(add_help=False), wanted="")  # names only
        try:
            manager.pm.subset_hook_caller("opus_register_commands", others)(commands=commands)
        except Exception:  # reported when `opus` itself registers them
            continue
        added[name] = list(commands.names)
    return added


def list_plugins(context: CommandContext) -> int:
    """Every plugin with its version, distribution, what it provides, hooks and status.

    Besides runners, persistence, loggers and processors, `provides` names the manifest
    files a loader reads (`manifests`: the suffixes in its module's
    `OPUS_MANIFEST_SUFFIXES`, else `*`) and the `opus` commands a plugin adds
    (`commands`); the core's own commands are those of `builtin.commands`; a plugin with
    options names their table (`options: [plugins.NAME]`).
    """
    from opus_core.cli.output import emit

    infos = context.plugins.plugins()
    commands = commands_by_plugin(context.plugins)
    for info in infos:
        if info.status != "enabled":
            continue
        if "opus_load_tasks" in info.hooks:
            suffixes = getattr(info.plugin, "OPUS_MANIFEST_SUFFIXES", None)
            info.provides["manifests"] = list(suffixes or ["*"])
        if commands.get(info.name):
            info.provides["commands"] = commands[info.name]
        if "opus_plugin_options" in info.hooks:
            info.provides["options"] = [f"[plugins.{info.name}]"]
    rows = []
    for info in infos:
        provides = "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in info.provides.items() if names
        )
        status = f"error: {info.error}" if info.status == "error" else info.status
        rows.append(
            (
                info.name,
                info.version or "-",
                info.distribution or "-",
                status,
                provides or "-",
                ", ".join(info.hooks) or "-",
            )
        )
    emit(
        ("NAME", "VERSION", "DISTRIBUTION", "STATUS", "PROVIDES", "HOOKS"),
        rows,
        [info.to_dict() for info in infos],
        context.args.json,
    )
    return 0
