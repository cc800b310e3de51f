"""Building the engine's parts from configuration and plugins.

`Assembly` turns a `Config` into a plugin manager, runner, persistence,
logger, processors and tasks, checking every name against what the plugins
provide and every option against what the class that receives it accepts.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opus_core.config import Config, load_config
from opus_core.errors import (
    ConfigError,
    ManifestError,
    OpusError,
    PluginError,
    describe_exception,
    did_you_mean,
)
from opus_core.logger import LoggerWrapper
from opus_core.manifest import Task
from opus_core.options import accepted_options, describe_type, matches, wants_path
from opus_core.persistence import StatePersistence
from opus_core.plugin.manager import PluginManager
from opus_core.plugin.registry import SECTIONS
from opus_core.processor import TaskProcessor
from opus_core.runners.base import Runner

# -- naming what plugins provide ------------------------------------------------------


def provided_by(manager: PluginManager | None, section: str, what: object) -> str:
    """How messages name a runner, persistence or logger and the plugin that provides it.

    `what` is the instance or class; section is "runners", "persistence" or
    "loggers". Gives `runner 'x' (plugin 'p' (dist 1.0))`, or `runner 'x'` alone
    when no plugin registered that class under that name. Never raises.
    """
    cls = what if isinstance(what, type) else type(what)
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        name = cls.__name__
    singular = {"runners": "runner", "loggers": "logger"}.get(section, section)
    label = f"{singular} {name!r}"
    if manager is None:
        return label
    try:
        registry = manager.registry(section)
        if registry.classes.get(name) is cls and name in registry.providers:
            return f"{label} ({manager.provider(section, name).describe()})"
    except Exception:  # naming the culprit must not hide the error being reported
        pass
    return label


def plugin_failed(
    manager: PluginManager | None, section: str, what: object, doing: str, exc: BaseException
) -> PluginError:
    """A `PluginError`: `runner 'x' (plugin 'p') failed to DOING: Type: message`."""
    return PluginError(
        f"{provided_by(manager, section, what)} failed to {doing}: {describe_exception(exc)}"
    )


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
        self.configured = False
        """Whether the plugins were handed their options (`configure_plugins`, done once)."""

    # -- names and options

    def lookup(self, section: str, name: str, key: str) -> type:
        """The class providing `name` in `section`; `key` is the config key for messages."""
        registry = self.manager.registry(section)
        if name in registry:
            return registry[name]
        kind = registry.kind
        where = self.config.where(key)
        wanted = kind.known.get(name)
        disabled = self.manager.disabled_plugins()
        for info in disabled:
            if wanted is not None and info.distribution == wanted:
                raise ConfigError(
                    f"{where}: {kind.singular} {name!r} is provided by {info.describe()}, which "
                    "[opus] disable_plugins disables; remove it from that list"
                )
        installed = ", ".join(registry.names()) or "none"
        message = f"{where}: no {kind.singular} named {name!r}; installed {section}: {installed}"
        message += did_you_mean(name, registry.names())
        if disabled and wanted is None:
            names = ", ".join(repr(info.name) for info in disabled)
            message += f"; [opus] disable_plugins keeps {names} from loading"
        broken = self.manager.broken()
        for info in broken:
            if wanted is None or info.distribution == wanted:
                message += f"; {info.describe()} {info.failure}: {info.error}"
        if wanted and not any(i.distribution == wanted for i in broken):
            message += f" (pip install {wanted} provides it)"
        elif not wanted:
            message += (
                "; install the plugin that provides it, or load a module of your own with "
                "`opus -p MODULE` or $OPUS_PLUGINS"
            )
        raise ConfigError(message)

    def checked_options(
        self, dotted: str, table: dict[str, Any], cls: type, what: str
    ) -> dict[str, Any]:
        """`table` (the options at `dotted`) checked against `cls`'s keyword arguments.

        Relative paths are resolved against the file that set them; `what`
        names the receiver in messages ("runner 'process'").
        """
        options = dict(table)
        accepted, open_ended = accepted_options(cls)
        for key, value in table.items():
            at = f"{dotted}.{key}"
            if key not in accepted:
                if open_ended:
                    continue
                known = ", ".join(sorted(accepted)) or "none"
                hint = did_you_mean(key, accepted) if len(accepted) > 1 else ""
                raise ConfigError(
                    f"{self.config.where(at)}: unknown option {key!r} for {what}; "
                    f"it accepts: {known}{hint}"
                )
            hint = accepted[key]
            if not matches(value, hint):
                raise ConfigError(
                    f"{self.config.where(at)} must be {describe_type(hint)}, got {value!r}"
                )
            if isinstance(value, str) and wants_path(hint):
                origin = self.config.origin(at)
                base = origin.parent if origin else Path.cwd()
                options[key] = base / Path(value).expanduser()
        return options

    def options(self, section: str, name: str, cls: type) -> dict[str, Any]:
        """The checked options of `[<section>.<name>]` for `cls`."""
        what = f"{self.manager.registry(section).kind.singular} {name!r}"
        return self.checked_options(
            f"{section}.{name}", self.config.section(section, name), cls, what
        )

    def build(self, section: str, name: str | None = None, **extra: Any) -> Any:
        """An instance of the configured (or named) runner, persistence or logger."""
        kind = self.manager.registry(section).kind
        name = name or self.config.opus(kind.singular) or kind.default
        cls = self.lookup(section, name, kind.key)
        options = {**extra, **self.options(section, name, cls)}
        try:
            return cls(**options)
        except OpusError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.config.where(f'{section}.{name}')}: {exc}") from None
        except Exception as exc:  # the plugin's own code: name it
            raise plugin_failed(self.manager, section, cls, "start", exc) from None

    def check(self) -> None:
        """Check every name and option table the configuration holds, before building anything.

        Plugins get their `[plugins.<name>]` options here, through `opus_configure`
        (unless they already had them from this assembly).
        """
        self.check_sections()
        self.configure_plugins()

    def check_sections(self) -> None:
        """Check the chosen runner, persistence and logger, and every `[runners.<name>]`,
        `[persistence.<name>]` and `[loggers.<name>]` table, against what plugins provide."""
        for section in SECTIONS:
            kind = self.manager.registry(section).kind
            chosen = self.config.opus(kind.singular)
            if chosen:
                self.lookup(section, chosen, kind.key)
            for name in self.config.data.get(section, {}):
                self.options(section, name, self.lookup(section, name, f"{section}.{name}"))

    def configure_plugins(self) -> None:
        """Check `[plugins.<name>]` and hand each plugin that takes options its own.

        Once per assembly: a second call does nothing, so the command line and the
        engine it builds from the same assembly configure the plugins once.
        """
        if self.configured:
            return
        tables: dict[str, Any] = self.config.data.get("plugins", {})
        infos = {info.name: info for info in self.manager.plugins()}
        for name in tables:
            info = infos.get(name)
            where = self.config.where(f"plugins.{name}")
            if info is None:
                installed = ", ".join(sorted(n for n, i in infos.items() if not i.builtin))
                hint = did_you_mean(name, infos)
                raise ConfigError(
                    f"{where}: no plugin named {name!r}{hint}; installed plugins: "
                    f"{installed or 'none'}"
                )
            if info.status == "enabled" and self.manager.options_class(name) is None:
                sections = [
                    f"[{section}.{provided}]"
                    for section in ("runners", "persistence", "loggers")
                    for provided in info.provides.get(section, [])
                ]
                hint = f"; its {' and '.join(sections)} options go there" if sections else ""
                raise ConfigError(f"{where}: {info.describe()} takes no options{hint}")
        for name, info in infos.items():
            cls = self.manager.options_class(name)
            if cls is None or info.status != "enabled":
                continue
            options = self.checked_options(
                f"plugins.{name}", tables.get(name, {}), cls, f"plugin {name!r}"
            )
            try:
                instance = cls(**options)
            except Exception as exc:  # the plugin's own class: whatever it raises is its
                raise ConfigError(
                    f"{self.config.where(f'plugins.{name}')}: plugin {name!r} rejected its "
                    f"options: {type(exc).__name__}: {exc}"
                ) from None
            try:
                self.manager.configure(name, instance)
            except PluginError as exc:
                raise ConfigError(f"{self.config.where(f'plugins.{name}')}: {exc}") from None
        self.configured = True

    def runner(self, name: str | None = None) -> Runner:
        """The configured runner, or the one called `name`, with its options."""
        runner: Runner = self.build("runners", name)
        return runner

    def runner_class(self, name: str | None = None) -> tuple[type[Runner], dict[str, Any]]:
        """The runner class and its checked options (the engine makes one per run)."""
        kind = self.manager.registry("runners").kind
        name = name or self.config.opus("runner") or kind.default
        cls = self.lookup("runners", name, kind.key)
        return cls, self.options("runners", name, cls)

    def persistence(self) -> StatePersistence:
        """The configured persistence with its options."""
        persistence: StatePersistence = self.build("persistence")
        return persistence

    def logger(self) -> LoggerWrapper:
        """The configured logger; `[opus] log_level` is its level unless its section sets one."""
        kind = self.manager.registry("loggers").kind
        name = self.config.opus("logger") or kind.default
        cls = self.lookup("loggers", name, kind.key)
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
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a script-style module's argparse
            what = (
                f"SystemExit({exc.code!r}): it calls sys.exit() when imported"
                if isinstance(exc, SystemExit)
                else describe_exception(exc)
            )
            raise ConfigError(
                f"{where}: cannot import {module_name!r} for processor {path!r}: {what}"
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
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:
                    raise ConfigError(
                        f"{self.config.where('opus.processors')}: cannot create {path!r}: "
                        f"{describe_exception(exc)}"
                    ) from None
            found.append(processor)
        return found

    def tasks(self) -> list[Task]:
        """The `[[tasks]]` of the configuration, then those of `[opus] manifests`, in order."""
        return [task for task, _ in self.tasks_with_sources()]

    def tasks_with_sources(self) -> list[tuple[Task, str]]:
        """Each task with where it was written: `file: tasks[i]` or the manifest file."""
        from opus_core.manifest_files import manifests

        entries = self.config.data.get("tasks", [])
        origin = str(self.config.origin("tasks"))
        try:
            tasks = manifests(entries, origin) if entries else []
        except ManifestError as exc:
            raise ConfigError(str(exc)) from None
        found = [(task, f"{origin}: tasks[{index}]") for index, task in enumerate(tasks)]
        for path in self.manifest_files():
            try:
                loaded = self.manager.load_tasks(path)
            except ManifestError as exc:
                raise ConfigError(str(exc)) from None
            if loaded is None:
                hint = (
                    " (pip install opus-plugin-yaml reads it)"
                    if path.suffix
                    in (
                        ".yaml",
                        ".yml",
                    )
                    else ""
                )
                raise ConfigError(
                    f"{self.config.where('opus.manifests')}: no plugin reads {path} "
                    f"(opus_load_tasks); the core reads .toml and .json files{hint}"
                )
            found.extend((task, str(path)) for task in loaded)
        return found

    def manifest_files(self) -> list[Path]:
        """The files `[opus] manifests` names (globs relative to the file that set them)."""
        where = self.config.where("opus.manifests")
        origin = self.config.origin("opus.manifests")
        base = origin.parent if origin else Path.cwd()
        files: list[Path] = []
        for pattern in self.config.opus("manifests", ()):
            path = Path(pattern).expanduser()
            if path.is_absolute():
                matched = sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            else:
                matched = sorted(base.glob(pattern))
            matched = [m for m in matched if m.is_file()]
            if not matched:
                raise ConfigError(f"{where}: {pattern!r} matches no file (relative to {base})")
            files.extend(m for m in matched if m not in files)
        return files


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
