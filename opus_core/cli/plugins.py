"""`opus plugins list`."""

from __future__ import annotations

from opus_core.cli.context import CommandContext
from opus_core.cli.output import emit


def list_plugins(context: CommandContext) -> int:
    """Every plugin with its version, distribution, what it provides, hooks and status."""
    infos = context.plugins.plugins()
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
