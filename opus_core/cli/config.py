"""`opus config show|init|path`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.cli.commands import COMMAND_HELP
from opus_core.config import FILENAME, OPUS_KEYS, Config, user_config_path
from opus_core.errors import ConfigError

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext
    from opus_core.plugin.manager import PluginManager


def add_command(commands: Commands) -> None:
    """`opus config show|init|path`: their arguments, and `show`, `init` and `path` to handle
    them."""
    config = commands.add_group("config", COMMAND_HELP["config"], default="show")
    config_show = config.add(
        "show",
        show,
        help="the merged configuration, defaults included, and where each value is from",
    )
    config_show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    starter = config.add(
        "init",
        init,
        help="write a commented starter opus.toml",
        configure=False,
    )
    starter.add_argument(
        "path",
        nargs="?",
        default="opus.toml",
        help="the file to write, or a directory to write opus.toml in (default: ./opus.toml)",
    )
    starter.add_argument("--force", action="store_true", help="overwrite an existing file")
    config.add(
        "path",
        path,
        help="which configuration files are read",
        configure=False,  # says where the files are even when they are wrong
    )


def _leaves(
    data: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            found.extend(_leaves(value, path))
        else:
            found.append((path, value))
    return found


def toml_key(key: str) -> str:
    """`key` as a TOML key: bare when it can be, else quoted."""
    import json

    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return json.dumps(key)


def inline(value: Any) -> str:
    """A value as one line of TOML."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {inline(v)}" for k, v in value.items()) + " }"
    return str(value)


DEFAULT = "default"
"""The source `opus config show` gives a value nobody set."""

OPUS_DEFAULTS: dict[str, Any] = {
    "log_level": "INFO",
    "disable_plugins": [],
    "processors": [],
    "fail_fast": False,
    "manifests": [],
}
"""The `[opus]` defaults that need no plugin to know (runner, persistence, logger do)."""


def _defaults(config: Config, manager: PluginManager) -> dict[tuple[str, ...], Any]:
    """Every value in effect that no file sets: `[opus]` keys and the chosen classes' options."""
    found: dict[tuple[str, ...], Any] = {}
    chosen: list[tuple[str, str, type | None]] = []
    for section in ("runners", "persistence", "loggers"):
        registry = manager.registry(section)
        kind = registry.kind
        found[("opus", kind.singular)] = kind.default
        name = config.opus(kind.singular) or kind.default
        cls: type | None
        try:
            cls = registry[name]
        except Exception:  # an unknown or contested name: `opus run` reports it, not this
            cls = None
        chosen.append((section, name, cls))
    found.update({("opus", key): value for key, value in OPUS_DEFAULTS.items()})
    for section, name, cls in chosen:
        if cls is None:
            continue
        for option, value in _option_defaults(cls).items():
            if section == "loggers" and option == "level":
                continue  # [opus] log_level is the level unless the logger's table sets one
            found[(section, name, option)] = value
    return found


def _option_defaults(cls: type) -> dict[str, Any]:
    """The keyword options of `cls(...)` whose default TOML can write (None cannot)."""
    import inspect

    from opus_core.options import NOT_OPTIONS

    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for name, parameter in parameters.items():
        default = parameter.default
        if name in NOT_OPTIONS or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        if isinstance(default, os.PathLike):
            default = os.fspath(default)
        if isinstance(default, (bool, int, float, str)) or (
            isinstance(default, (list, tuple))
            and all(isinstance(v, (bool, int, float, str)) for v in default)
        ):
            found[name] = list(default) if isinstance(default, tuple) else default
    return found


def effective(
    config: Config, manager: PluginManager
) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[Any, str]]]:
    """The configuration in effect: the merged files with every default filled in.

    Returns the data (tasks included) and, for each value outside `tasks`, the
    value and where it came from: a file, or `DEFAULT`.
    """
    import copy

    data = copy.deepcopy(config.data)
    data.setdefault("opus", {})
    tasks = data.pop("tasks", None)
    defaults = _defaults(config, manager)
    entries: dict[tuple[str, ...], tuple[Any, str]] = {}
    opus: dict[str, Any] = {}
    for key in OPUS_KEYS:  # the [opus] table first, in its documented order
        path: tuple[str, ...] = ("opus", key)
        if key in data["opus"]:
            opus[key] = data["opus"][key]
            entries[path] = (opus[key], str(config.origin(f"opus.{key}")))
        elif path in defaults:
            opus[key] = defaults[path]
            entries[path] = (opus[key], DEFAULT)
    data["opus"] = opus
    for path, value in _leaves(data):
        if path in entries or (value == {} and any(d[: len(path)] == path for d in defaults)):
            continue
        entries[path] = (value, str(config.origin(".".join(path))))
    for path, value in defaults.items():
        if path not in entries:
            entries[path] = (value, DEFAULT)
            table = data
            for part in path[:-1]:
                table = table.setdefault(part, {})
            table[path[-1]] = value
    if tasks is not None:
        data["tasks"] = tasks
    return data, entries


def show(context: CommandContext) -> int:
    """The configuration in effect as TOML lines, each with the file it came from or `# default`."""
    import json

    import tomli_w

    args = context.args
    config = context.config
    data, entries = effective(config, context.plugins)
    tasks = data.get("tasks") or []
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "files": [str(f) for f in config.files],
                    "config": data,
                    "sources": {".".join(path): source for path, (_, source) in entries.items()},
                },
                indent=2,
                default=str,
            )
        )
        return 0
    if not config.files:
        print("# no configuration file found; every setting has its default")
    for path, (value, source) in entries.items():
        print(f"{'.'.join(toml_key(part) for part in path)} = {inline(value)}  # {source}")
    if tasks:
        print(f"\n# {len(tasks)} task(s) from {config.origin('tasks')}")
        print(tomli_w.dumps({"tasks": tasks}).rstrip())
    return 0


STARTER = {
    "opus": {
        "runner": "sequential",
        "persistence": "sqlite",
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


def init(context: CommandContext) -> int:
    """Write a commented starter opus.toml; refuse to overwrite without --force."""
    import tomli_w

    args = context.args
    target = Path(args.path)
    if target.is_dir() and target.suffix != ".toml":  # `opus config init app`: app/opus.toml
        target = target / FILENAME
    if target.is_dir():
        raise ConfigError(
            f"{target} is a directory; opus config init writes a file: give another path"
        )
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    blocking = next((d for d in target.parents if d.exists() and not d.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"cannot write {target}: {blocking} is not a directory")
    if target.exists() and not target.is_file():
        raise ConfigError(f"{target} is not a regular file; opus config init writes a file")
    parts = ["# opus configuration; `opus config show` prints what is in effect.\n"]
    for name, table in STARTER.items():
        parts.append(f"{STARTER_COMMENTS[name]}\n{tomli_w.dumps({name: table})}")
    text = "\n".join(parts) + STARTER_TAIL
    try:
        _write(target, text)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename and str(exc.filename) != str(target) else ""
        raise ConfigError(f"cannot write {target}: {where}{exc.strerror or exc}") from None
    print(f"wrote {target}")
    return 0


def _write(target: Path, text: str) -> None:
    """Write `target` whole or not at all, as an editor would make it (0o666 less the umask
    for a new file)."""
    from opus_core.files import atomic_write

    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text.encode("utf-8"))


def path(context: CommandContext) -> int:
    """Which configuration files are read, and how the project file was found."""
    config = context.config
    if config.project:
        print(f"project: {config.project} (found by {config.found_by})")
    else:
        print(f"project: none (no opus.toml in {Path.cwd()} or its parents)")
    user = user_config_path()
    print(f"user:    {user} ({'read' if user.is_file() else 'not present'})")
    print(f"state:   {_state(context)}")
    return 0


def _state(context: CommandContext) -> str:
    """Where the configured persistence keeps state (this project's folder by default)."""
    from opus_core.cli.state import location
    from opus_core.errors import OpusError
    from opus_core.persistence import MemoryPersistence

    config = context.config
    try:
        context.configure()  # a persistence may read its plugin's [plugins.NAME] options
        persistence = context.persistence
    except OpusError as exc:
        return f"{config.state_dir} (this project's folder; the persistence is unusable: {exc})"
    where = location(persistence)
    if isinstance(persistence, MemoryPersistence):  # nothing on disk; say where files would go
        where += f"; this project's folder: {config.state_dir}"
    return where
