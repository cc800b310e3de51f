"""`opus config show|init|path`."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from opus_core.config import Config, load_config, user_config_path
from opus_core.errors import ConfigError


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found.extend(_leaves(value, dotted + "."))
        else:
            found.append((dotted, value))
    return found


def inline(value: Any) -> str:
    """A value as one line of TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {inline(v)}" for k, v in value.items()) + " }"
    return str(value)


def show(args: argparse.Namespace) -> int:
    """The merged configuration as TOML, each value followed by the file it came from."""
    config = load_config(getattr(args, "config", None))
    if not config.files:
        print("# no configuration file found; every setting has its default")
        return 0
    data = dict(config.data)
    tasks = data.pop("tasks", None)
    for dotted, value in _leaves(data):
        print(f"{dotted} = {inline(value)}  # {config.origin(dotted)}")
    if tasks:
        print(f"\n# {len(tasks)} task(s) from {config.origin('tasks')}")
        print(tomli_w.dumps({"tasks": tasks}).rstrip())
    return 0


STARTER = {
    "opus": {
        "runner": "sequential",
        "persistence": "memory",
        "logger": "plain",
        "log_level": "INFO",
        "fail_fast": False,
        "processors": [],
    },
}

STARTER_COMMENTS = {
    "opus": "# Which plugins do the work; `opus plugins list` shows what is installed.\n"
    '# processors: extra TaskProcessor classes by import path, e.g. "mypkg.deploy:Deploy"\n'
    "# (modules next to this file can be imported).",
}

STARTER_TAIL = """
# Options of a runner, persistence or logger go in [runners.<name>],
# [persistence.<name>] and [loggers.<name>], e.g.:
# [runners.process]
# max_workers = 4

# Tasks: a kind and version (handled by a registered processor), metadata and spec.
# [[tasks]]
# kind = "Deploy"
# version = "v1"
# [tasks.metadata]
# name = "web"
# dependencies = ["network"]
# [tasks.spec]
# image = "web:1.2"
"""


def init(args: argparse.Namespace) -> int:
    """Write a commented starter opus.toml; refuse to overwrite without --force."""
    target = Path(args.path)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    parts = ["# opus configuration; `opus config show` prints what is in effect.\n"]
    for name, table in STARTER.items():
        parts.append(f"{STARTER_COMMENTS[name]}\n{tomli_w.dumps({name: table})}")
    text = "\n".join(parts) + STARTER_TAIL
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    print(f"wrote {target}")
    return 0


def path(args: argparse.Namespace) -> int:
    """Which configuration files are read, and how the project file was found."""
    config = load_config(getattr(args, "config", None))
    if config.project:
        print(f"project: {config.project} (found by {config.found_by})")
    else:
        print(f"project: none (no opus.toml in {Path.cwd()} or its parents)")
    user = user_config_path()
    print(f"user:    {user} ({'read' if user.is_file() else 'not present'})")
    print(f"state:   {_state(args, config)}")
    return 0


def _state(args: argparse.Namespace, config: Config) -> str:
    """Where the configured persistence keeps state (this project's folder by default)."""
    from opus_core.assembly import Assembly
    from opus_core.cli.state import location
    from opus_core.errors import OpusError
    from opus_core.persistence import StatePersistence

    try:
        persistence = Assembly(config, manager=getattr(args, "plugin_manager", None)).persistence()
    except OpusError as exc:
        return f"{config.state_dir} (this project's folder; the persistence is unusable: {exc})"
    where = location(persistence)
    if type(persistence) is StatePersistence:  # nothing on disk; say where files would go
        where += f"; this project's folder: {config.state_dir}"
    return where
