"""`opus plugins list`."""

from __future__ import annotations

from opus_core.cli.context import CommandContext
from opus_core.cli.output import emit


def list_plugins(context: CommandContext) -> int:
    """Every plugin with its version, distribution, what it provides, hooks and status.

    Besides runners, persistence, loggers and processors, `provides` names the manifest
    files a loader reads (`manifests`: the suffixes in its module's
    `OPUS_MANIFEST_SUFFIXES`, else `*`) and the `opus` commands a plugin adds
    (`commands`); the core's own commands are left out.
    """
    infos = context.plugins.plugins()
    commands = context.plugins.commands_by_plugin()
    for info in infos:
        if info.status != "enabled":
            continue
        if "opus_load_tasks" in info.hooks:
            suffixes = getattr(info.plugin, "OPUS_MANIFEST_SUFFIXES", None)
            info.provides["manifests"] = list(suffixes or ["*"])
        if commands.get(info.name):
            info.provides["commands"] = commands[info.name]
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
