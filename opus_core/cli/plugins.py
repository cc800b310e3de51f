"""`opus plugins list`."""

from __future__ import annotations

import argparse

from opus_core.cli.output import emit
from opus_core.config import load_config
from opus_core.plugin.manager import PluginManager


def list_plugins(args: argparse.Namespace) -> int:
    """Every plugin with its version, distribution, what it provides, hooks and status."""
    manager = getattr(args, "plugin_manager", None)
    if manager is None:
        config = load_config(getattr(args, "config", None))
        manager = PluginManager(disabled=config.opus("disable_plugins", ()))
    infos = manager.plugins()
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
        args.json,
    )
    return 0
