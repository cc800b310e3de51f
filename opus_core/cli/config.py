"""`opus config show|init|path`."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import tomli_w

from opus_core.config import load_config, user_config_path
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
    "opus": (
        "# Which plugins do the work. `opus plugins list` shows what is installed.",
        {"runner": "sequential", "persistence": "memory", "logger": "plain", "log_level": "INFO",
         "fail_fast": False, "processors": ["processors:Hello"]},
    ),
    "runners.process": (
        "# Options of a runner: [runners.<name>].",
        {"max_workers": 4},
    ),
}

STARTER_TASKS = [
    {"kind": "Hello", "version": "v1", "metadata": {"name": "hello"}, "spec": {"greeting": "Hi"}},
]


def init(args: argparse.Namespace) -> int:
    """Write a commented starter opus.toml; refuse to overwrite without --force."""
    target = Path(args.path)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    parts = ["# opus configuration: see `opus config show` and the README.\n"]
    for name, (comment, table) in STARTER.items():
        section = tomli_w.dumps({"x": table}).replace("[x]", f"[{name}]", 1)
        parts.append(f"{comment}\n{section}")
    parts.append(
        "# Tasks: a kind and version handled by a processor (here the `processors:Hello`\n"
        "# class from processors.py next to this file), metadata and spec.\n"
        + tomli_w.dumps({"tasks": STARTER_TASKS})
    )
    text = "\n".join(parts)
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
    return 0
