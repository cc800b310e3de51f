"""Building the engine's parts from configuration and plugins.

`Assembly` turns a `Config` into a plugin manager, runner, persistence,
logger, processors and tasks, checking every name against what the plugins
provide and every option against what the class that receives it accepts.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import os
import sys
import threading
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opus_core.config import Config, load_config
from opus_core.errors import ConfigError, ManifestError, OpusError
from opus_core.logger import LoggerWrapper
from opus_core.manifest import Task
from opus_core.persistence import StatePersistence
from opus_core.plugin_manager import KINDS, KNOWN_DISTRIBUTIONS, SINGULAR, PluginManager
from opus_core.processor import TaskProcessor
from opus_core.runners.base import Runner

DEFAULTS = {"runners": "sequential", "persistence": "memory", "loggers": "plain"}
OPUS_KEY = {"runners": "runner", "persistence": "persistence", "loggers": "logger"}
NOT_OPTIONS = frozenset({"self", "logger"})


# -- options ----------------------------------------------------------------------


def accepted_options(cls: type) -> tuple[dict[str, Any], bool]:
    """The keyword options `cls(...)` takes with their type hints, and whether it takes any."""
    init = cls.__init__  # type: ignore[misc]
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return {}, True
    try:
        hints = typing.get_type_hints(init)
    except Exception:
        hints = {}
    options: dict[str, Any] = {}
    open_ended = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind is not parameter.VAR_POSITIONAL and name not in NOT_OPTIONS:
            options[name] = hints.get(name, Any)
    return options, open_ended


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if _is_path(hint):
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True  # a type we cannot check from TOML: let the class judge


def _is_path(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, (Path, os.PathLike))


def _wants_path(hint: Any) -> bool:
    return _is_path(hint) or any(_is_path(arg) for arg in typing.get_args(hint))


def describe_type(hint: Any) -> str:
    """How an error message names what an option expects."""
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        dict: "a table",
        list: "a list",
        type(None): "nothing",
    }
    if hint in names:
        return names[hint]
    if _is_path(hint):
        return "a path"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {describe_type(args[0]).removeprefix('a ')}s" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a table"
    return getattr(hint, "__name__", str(hint))


# -- the assembly -------------------------------------------------------------------


class Assembly:
    """Plugins plus configuration: builds runners, persistence, loggers, processors and tasks."""

    def __init__(
        self,
        config: Config | None = None,
        plugins: Sequence[object] = (),
        manager: PluginManager | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        self.manager = manager or PluginManager(disabled=self.config.opus("disable_plugins", ()))
        for plugin in plugins:
            self.manager.register(plugin)

    # -- names and options

    def lookup(self, kind: str, name: str, key: str) -> type:
        """The class providing `name` of `kind`; `key` is the config key for messages."""
        registry = self.manager.registry(kind)
        if name in registry:
            return registry[name]
        what = SINGULAR[kind]
        installed = ", ".join(sorted(registry)) or "none"
        message = (
            f"{self.config.where(key)}: no {what} named {name!r}; installed {kind}: {installed}"
        )
        wanted = KNOWN_DISTRIBUTIONS.get((kind, name))
        for info in self.manager.broken():
            if wanted is None or info.distribution == wanted:
                message += f"; plugin {info.name!r} failed to load: {info.error}"
        if wanted and not any(i.distribution == wanted for i in self.manager.broken()):
            message += f" (pip install {wanted} provides it)"
        raise ConfigError(message)

    def options(self, kind: str, name: str, cls: type) -> dict[str, Any]:
        """The checked options of `[<kind>.<name>]` for `cls`, relative paths resolved."""
        options = self.config.section(kind, name)
        accepted, open_ended = accepted_options(cls)
        for key, value in options.items():
            dotted = f"{kind}.{name}.{key}"
            if key not in accepted:
                if open_ended:
                    continue
                known = ", ".join(sorted(accepted)) or "none"
                raise ConfigError(
                    f"{self.config.where(dotted)}: unknown option {key!r} for {SINGULAR[kind]} "
                    f"{name!r}; it accepts: {known}"
                )
            hint = accepted[key]
            if not _matches(value, hint):
                raise ConfigError(
                    f"{self.config.where(dotted)} must be {describe_type(hint)}, got {value!r}"
                )
            if isinstance(value, str) and _wants_path(hint):
                origin = self.config.origin(dotted)
                base = origin.parent if origin else Path.cwd()
                options[key] = base / Path(value).expanduser()
        return options

    def build(self, kind: str, name: str | None = None, **extra: Any) -> Any:
        """An instance of the configured (or named) runner, persistence or logger."""
        key = f"opus.{OPUS_KEY[kind]}"
        name = name or self.config.opus(OPUS_KEY[kind]) or DEFAULTS[kind]
        cls = self.lookup(kind, name, key)
        options = {**extra, **self.options(kind, name, cls)}
        try:
            return cls(**options)
        except OpusError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.config.where(f'{kind}.{name}')}: {exc}") from None

    def check(self) -> None:
        """Check every name and option table the configuration holds, before building anything."""
        for kind in KINDS:
            chosen = self.config.opus(OPUS_KEY[kind])
            if chosen:
                self.lookup(kind, chosen, f"opus.{OPUS_KEY[kind]}")
            for name in self.config.data.get(kind, {}):
                self.options(kind, name, self.lookup(kind, name, f"{kind}.{name}"))

    def runner(self, name: str | None = None) -> Runner:
        """The configured runner, or the one called `name`, with its options."""
        runner: Runner = self.build("runners", name)
        return runner

    def runner_class(self, name: str | None = None) -> tuple[type[Runner], dict[str, Any]]:
        """The runner class and its checked options (the engine makes one per run)."""
        name = name or self.config.opus("runner") or DEFAULTS["runners"]
        cls = self.lookup("runners", name, "opus.runner")
        return cls, self.options("runners", name, cls)

    def persistence(self) -> StatePersistence:
        """The configured persistence with its options."""
        persistence: StatePersistence = self.build("persistence")
        return persistence

    def logger(self) -> LoggerWrapper:
        """The configured logger; `[opus] log_level` is its level unless its section sets one."""
        name = self.config.opus("logger") or DEFAULTS["loggers"]
        cls = self.lookup("loggers", name, "opus.logger")
        accepted, _ = accepted_options(cls)
        extra = {}
        level = self.config.opus("log_level")
        if level and "level" in accepted:
            extra["level"] = level
        logger: LoggerWrapper = self.build("loggers", name, **extra)
        return logger

    # -- processors and tasks

    def import_processor(self, path: str) -> TaskProcessor | type[TaskProcessor]:
        """The processor an `[opus] processors` entry names ("module:Name" or "module.Name")."""
        where = self.config.where("opus.processors")
        module_name, sep, attribute = path.partition(":")
        if not sep:
            module_name, _, attribute = path.rpartition(".")
        if not module_name or not attribute:
            raise ConfigError(
                f'{where}: {path!r} is not an import path like "package.module:Class"'
            )
        base = str(self.config.base_dir)
        if base not in sys.path:
            # Stays on the path: worker processes started later (dask) import it too.
            sys.path.insert(0, base)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise ConfigError(
                f"{where}: cannot import {module_name!r} for processor {path!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        try:
            found = getattr(module, attribute)
        except AttributeError:
            raise ConfigError(f"{where}: module {module_name!r} has no {attribute!r}") from None
        if isinstance(found, TaskProcessor) or (
            isinstance(found, type) and issubclass(found, TaskProcessor)
        ):
            return found
        raise ConfigError(f"{where}: {path!r} is {found!r}, not a TaskProcessor subclass")

    def processors(self, logger: LoggerWrapper) -> list[TaskProcessor]:
        """Processors from plugins and from `[opus] processors`, ready to register."""
        found = self.manager.processors(logger)
        for path in self.config.opus("processors", ()):
            processor = self.import_processor(path)
            if isinstance(processor, type):
                try:
                    processor = processor(logger=logger)
                except Exception as exc:
                    raise ConfigError(
                        f"{self.config.where('opus.processors')}: cannot create {path!r}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
            found.append(processor)
        return found

    def tasks(self) -> list[Task]:
        """The `[[tasks]]` of the configuration as manifests."""
        tasks = []
        for index, entry in enumerate(self.config.data.get("tasks", [])):
            try:
                tasks.append(
                    Task(
                        kind=entry.get("kind"),
                        version=entry.get("version"),
                        spec=entry.get("spec"),
                        metadata=entry.get("metadata"),
                    )
                )
            except ManifestError as exc:
                raise ConfigError(f"{self.config.origin('tasks')}: tasks[{index}]: {exc}") from None
        return tasks


# -- @task's runner -------------------------------------------------------------------

_task_runners: dict[str | None, Runner] = {}
_task_runners_lock = threading.Lock()


def configured_runner(name: str | None = None) -> Runner:
    """The runner `@task` uses: `name`, else `[opus] runner`, else `process`, with options.

    One instance per name for the whole process; the configuration is the
    `opus.toml` found from `$OPUS_CONFIG` or the current directory.
    """
    with _task_runners_lock:
        runner = _task_runners.get(name)
        if runner is None:
            assembly = Assembly(load_config())
            chosen = name or assembly.config.opus("runner") or "process"
            runner = _task_runners.get(chosen)
            if runner is None:
                runner = _task_runners[chosen] = assembly.runner(chosen)
            _task_runners[name] = runner
        return runner
