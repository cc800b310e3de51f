"""`opus.toml`: finding it, merging it with the user's file, and checking what the core knows.

Checks that need plugins (which runner names exist, which options a runner
or plugin takes) live in `opus_core.assembly`; this module checks the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opus_core.errors import ConfigError, did_you_mean
from opus_core.task_numbers import check_amount

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The log levels `[opus] log_level` (and every logger) accepts."""
FILENAME = "opus.toml"
CONFIG_ENV = "OPUS_CONFIG"
SECTIONS = ("opus", "runners", "persistence", "loggers", "plugins", "resources", "tasks")

OPUS_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "runner": (str, "a runner name"),
    "persistence": (str, "a persistence name"),
    "logger": (str, "a logger name"),
    "log_level": (str, f"one of {', '.join(LEVELS)}"),
    "disable_plugins": (list, "a list of plugin (entry point) names"),
    "processors": (list, 'a list of import paths such as "mypkg.processors:Deploy"'),
    "fail_fast": (bool, "true or false"),
    "manifests": (list, 'a list of manifest files or globs such as "deploy/*.yaml"'),
    "resources_scope": (str, '"run" (the default) or "machine"'),
}

RESOURCE_SCOPES = ("run", "machine")
"""What `[resources]` capacities are shared by: one run's tasks, or every opus process of
the project on this machine (`opus_core.leases`)."""


def user_config_path() -> Path:
    """The user's own `opus.toml`, read beneath the project's."""
    import platformdirs

    return Path(platformdirs.user_config_dir("opus")) / FILENAME


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def project_state_dir(project: Path | None) -> Path:
    """The project's own state folder: `<name>-<hash>` under `platformdirs.user_state_dir("opus")`.

    `project` is the project's `opus.toml`; with none, the current directory is
    the project. The name is the project folder's (sanitised, for people); the
    hash — 12 hex digits of the sha256 of the resolved path — keeps two
    checkouts of one project, or two projects with one folder name, apart.
    """
    import hashlib

    import platformdirs

    # The file's folder is resolved, not the file: checkouts whose opus.toml is a
    # symlink to one shared file are still two projects.
    folder = (project.parent if project is not None else Path.cwd()).resolve()
    anchor = folder / project.name if project is not None else folder
    name = _UNSAFE.sub("_", folder.name).strip("._-")[:40] or "project"
    digest = hashlib.sha256(os.fsencode(anchor)).hexdigest()[:12]
    return Path(platformdirs.user_state_dir("opus")) / f"{name}-{digest}"


_LOADED: ContextVar[tuple[Path | None] | None] = ContextVar("opus_loaded_project")
_LOADED_IN_PROCESS: list[Path | None] = []
"""The project file of the configuration loaded last in this process, whatever the thread."""


def project_folder() -> Path:
    """The project folder: the folder of the `opus.toml` loaded last in this process.

    `Tasks.from_config` and the `opus` command load it; a forked worker inherits
    it. With none loaded yet, it is the folder of the `opus.toml` that lookup
    finds ($OPUS_CONFIG, else the current directory or its parents), else the
    current directory.

    `opus run` makes it every task's working directory, so a relative path
    just works there. A processor or function task that may also run under
    `Tasks.from_config` in a program of your own (which leaves that program's
    working directory alone) resolves relative paths against it:
    `opus_core.project_folder() / task.spec["file"]`.
    """
    if _LOADED_IN_PROCESS:
        project = _LOADED_IN_PROCESS[-1]
    else:
        try:
            project, _ = find_project_config()
        except ConfigError:
            project = None
    return project.parent if project is not None else Path.cwd()


def current_state_dir() -> Path:
    """The state folder of the project whose configuration was loaded last (`load_config`).

    With none loaded yet in this context, the project is the one `opus.toml`
    lookup finds ($OPUS_CONFIG, else the current directory or its parents).
    Persistence plugins use it for their default location.
    """
    loaded = _LOADED.get(None)
    if loaded is not None:
        return project_state_dir(loaded[0])
    try:
        project, _ = find_project_config()
    except ConfigError:
        project = None
    return project_state_dir(project)


@dataclass
class Config:
    """The merged configuration and where each value came from."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Path] = field(default_factory=dict)
    project: Path | None = None
    user: Path | None = None
    found_by: str = "none"

    def opus(self, key: str, default: Any = None) -> Any:
        """A value of the `[opus]` table."""
        return self.data.get("opus", {}).get(key, default)

    def section(self, kind: str, name: str) -> dict[str, Any]:
        """The options table `[<kind>.<name>]` (empty when absent)."""
        return dict(self.data.get(kind, {}).get(name, {}))

    def origin(self, dotted: str) -> Path | None:
        """The file that set `dotted` (or the nearest enclosing table)."""
        while dotted:
            if dotted in self.origins:
                return self.origins[dotted]
            dotted = dotted.rpartition(".")[0]
        return self.project or self.user

    def where(self, dotted: str) -> str:
        """`file: key` for error messages."""
        origin = self.origin(dotted)
        return f"{origin}: {dotted}" if origin else dotted

    @property
    def base_dir(self) -> Path:
        """The directory of the project file (else the current directory)."""
        return self.project.parent if self.project else Path.cwd()

    @property
    def state_dir(self) -> Path:
        """This project's default state folder (see `project_state_dir`)."""
        return project_state_dir(self.project)

    @property
    def files(self) -> list[Path]:
        """The files read, lowest precedence first."""
        return [p for p in (self.user, self.project) if p is not None]


def find_project_config(explicit: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """The project `opus.toml` and how it was found (`--config`, `$OPUS_CONFIG`, `search`)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file (from --config)")
        return path.resolve(), "--config"
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file (from ${CONFIG_ENV})")
        return path.resolve(), f"${CONFIG_ENV}"
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILENAME
        if candidate.is_file():
            return candidate, "search"
    return None, "none"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; errors name the file (and, for syntax, the line).

    The parser is `tomli`, the library the standard `tomllib` was taken from, compiled
    (its wheels are built with mypyc): it reads a 10,000-task `opus.toml` about three
    times faster.
    """
    import tomli

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data: dict[str, Any] | None
    try:
        data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        data = None
    if data is None or _too_deep(data):
        raise ConfigError(f"{path}: arrays or tables nested more than {MAX_DEPTH} levels deep")
    return data


MAX_DEPTH = 64
"""How deeply arrays and tables of a configuration file may nest."""


def _too_deep(data: dict[str, Any]) -> bool:
    """Whether `data` (as `tomli` or `json` made it: dicts and lists) nests deeper than
    `MAX_DEPTH`, checked a level at a time, without recursion."""
    level: list[Any] = [data]
    for _ in range(MAX_DEPTH):
        below: list[Any] = []
        for value in level:
            for child in value.values() if type(value) is dict else value:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        if not below:
            return False
        level = below
    return True


def _merge(
    into: dict[str, Any],
    data: Mapping[str, Any],
    path: Path,
    origins: dict[str, Path],
    prefix: str,
    copy: bool = True,
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
                _forget(origins, dotted)
            _merge(into[key], value, path, origins, dotted + ".", copy)
        else:
            into[key] = _copy(value) if copy else value
            _forget(origins, dotted)
        origins[dotted] = path


def _forget(origins: dict[str, Path], dotted: str) -> None:
    for stale in [k for k in origins if k.startswith(dotted + ".")]:
        del origins[stale]


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def load_config(path: str | os.PathLike[str] | None = None, *, user: bool = True) -> Config:
    """Find, read, merge and check the configuration (no file at all is an empty config)."""
    config = _found(path, user)
    _LOADED.set((config.project,))  # whose state a persistence built from it keeps by default
    _LOADED_IN_PROCESS[:] = [config.project]
    for file in config.files:
        # The parsed file is handed over, not copied: it leaves the cache, so nothing
        # else holds what the caller of load_config may change.
        _merge(config.data, _checked(file, take=True), file, config.origins, "", copy=False)
    return config


def opus_value(path: str | os.PathLike[str] | None, key: str, default: Any = None) -> Any:
    """One value of `[opus]` as `load_config(path)` would merge it, without merging (and so
    copying) the rest: what the command line needs before it builds anything."""
    value = default
    for file in _found(path, user=True).files:
        table = _checked(file).get("opus")
        if isinstance(table, Mapping) and key in table:
            value = _copy(table[key])
    return value


def _found(path: str | os.PathLike[str] | None, user: bool) -> Config:
    """An empty `Config` that knows its files: the project's and the user's."""
    project, found_by = find_project_config(path)
    config = Config(project=project, found_by=found_by)
    user_path = user_config_path() if user else None
    if user_path is not None and user_path.is_file() and user_path != project:
        config.user = user_path
    return config


_CHECKED: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def reset_caches() -> None:
    """Forget the configuration files read and the project loaded last in this process:
    `project_folder()` and `current_state_dir()` look the project up again."""
    _CHECKED.clear()
    _LOADED_IN_PROCESS.clear()
    _LOADED.set(None)


def _checked(file: Path, take: bool = False) -> dict[str, Any]:
    """`read_toml(file)` checked by `check_structure`, parsed once per version of the file
    in this process (a command reads its configuration more than once). What stays
    cached is never changed by anyone; with `take`, the caller gets it to keep and it
    leaves the cache."""
    try:
        info = file.stat()
        version = (info.st_mtime_ns, info.st_size, info.st_ino)
    except OSError:
        version = None
    cached = _CHECKED.pop(file, None) if take else _CHECKED.get(file)
    if version is not None and cached is not None and cached[0] == version:
        return cached[1]
    data = read_toml(file)
    check_structure(data, file)
    if version is not None and not take:
        _CHECKED[file] = (version, data)
    return data


def _type_error(file: Path, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{file}: {key} must be {expected}, got {value!r}")


def check_structure(data: Mapping[str, Any], file: Path) -> None:
    """Check the sections and the `[opus]` table of one file; plugins' tables are checked later."""
    for section, value in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{file}: unknown section [{section}]{did_you_mean(section, SECTIONS)}; "
                f"expected one of {', '.join(f'[{s}]' for s in SECTIONS[:-1])} or [[tasks]]"
            )
        if section == "tasks":  # each manifest's keys: when the tasks are built
            if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
                raise ConfigError(f"{file}: tasks must be an array of tables ([[tasks]])")
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{file}: {section} must be a table ([{section}])")
        if section == "opus":
            _check_opus_table(value, file)
        elif section == "resources":
            for name, capacity in value.items():
                try:
                    check_amount(f"resources.{name}", capacity)
                except ValueError as exc:
                    raise ConfigError(f"{file}: {exc} (a resource's capacity)") from None
        else:
            for name, options in value.items():
                if not isinstance(options, Mapping):
                    raise ConfigError(
                        f"{file}: {section}.{name} must be a table ([{section}.{name}]) of options"
                    )


def _check_opus_table(table: Mapping[str, Any], file: Path) -> None:
    for key, value in table.items():
        if key not in OPUS_KEYS:
            raise ConfigError(
                f"{file}: unknown key opus.{key}{did_you_mean(key, OPUS_KEYS)}; "
                f"expected one of {', '.join(OPUS_KEYS)}"
            )
        kind, expected = OPUS_KEYS[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _type_error(file, f"opus.{key}", expected, value)
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise _type_error(file, f"opus.{key}", expected, value)
        if isinstance(value, str) and not value:
            raise _type_error(file, f"opus.{key}", expected, value)
        if key == "log_level" and str(value).upper() not in LEVELS:
            raise _type_error(file, f"opus.{key}", expected, value)
        if key == "resources_scope" and value not in RESOURCE_SCOPES:
            raise _type_error(file, f"opus.{key}", expected, value)
