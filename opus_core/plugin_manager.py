"""Finding, loading and asking plugins: the only code that touches pluggy's hooks.

Entry points of the group `opus` are loaded once, lazily, the first time
anything is asked of the manager, so `opus --help` imports no plugin. The
core's own runners, persistence and logger (`opus_core.builtins`) are
registered first, through the same hooks as everyone else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from opus_core import hookspecs
from opus_core.entry_points import entry_points
from opus_core.errors import PluginError
from opus_core.events import RunObserver
from opus_core.logger import LoggerWrapper
from opus_core.persistence import StatePersistence
from opus_core.processor import TaskProcessor
from opus_core.runners.base import Runner
from opus_core.version import __version__

ENTRY_POINT_GROUP = "opus"
AUTOLOAD_ENV = "OPUS_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_NAME = "builtin"

KINDS = ("runners", "persistence", "loggers")
_BASES: dict[str, type] = {
    "runners": Runner,
    "persistence": StatePersistence,
    "loggers": LoggerWrapper,
}
SINGULAR = {"runners": "runner", "persistence": "persistence", "loggers": "logger"}

KNOWN_DISTRIBUTIONS: dict[tuple[str, str], str] = {
    ("runners", "threadpool"): "opus-plugin-threadpool",
    ("runners", "dask"): "opus-plugin-dask",
    ("persistence", "file"): "opus-plugin-file-persistence",
    ("loggers", "colorlog"): "opus-plugin-colorlog",
}
"""Names the project's own plugin distributions provide, for `pip install` hints."""

T = TypeVar("T")


@dataclass
class PluginInfo:
    """What `opus plugins list` shows about one plugin."""

    name: str
    version: str | None
    distribution: str | None
    builtin: bool
    status: str = "enabled"  # enabled | disabled | error
    error: str | None = None
    traceback: str | None = None
    provides: dict[str, list[str]] = field(
        default_factory=lambda: {kind: [] for kind in (*KINDS, "processors")}
    )
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `opus plugins list --json`."""
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "provides": self.provides,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
            "builtin": self.builtin,
        }


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class PluginManager:
    """Loads plugins and answers what they provide: runners, persistence, loggers, processors."""

    def __init__(self, disabled: Iterable[str] = (), autoload: bool | None = None) -> None:
        self.disabled = set(disabled)
        self.autoload = not _autoload_disabled() if autoload is None else autoload
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._loaded = False
        self._registries: dict[str, dict[str, type]] | None = None
        self._providers: dict[str, dict[str, str]] = {}

    # -- loading ----------------------------------------------------------------

    def load(self) -> None:
        """Register the built-ins and every entry point of the group `opus` (once)."""
        if self._loaded:
            return
        self._loaded = True
        from opus_core import builtins

        self._add(builtins, PluginInfo(BUILTIN_NAME, __version__, "opus-core", builtin=True))
        if not self.autoload:
            return
        for entry_point in entry_points(ENTRY_POINT_GROUP):
            info = PluginInfo(
                entry_point.name, entry_point.version, entry_point.distribution, builtin=False
            )
            if entry_point.name in self.disabled:
                info.status = "disabled"
                self.infos[info.name] = info
                continue
            try:
                plugin = entry_point.load()
            except Exception as exc:
                self._failed(info, exc)
                continue
            self._add(plugin, info)

    def register(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register an in-process plugin (a module or any object with hookimpls)."""
        self.load()
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        module = getattr(plugin, "__module__", None) or plugin_name
        info = PluginInfo(plugin_name, None, None, builtin=False)
        info.distribution = None if module == plugin_name else module.split(".")[0]
        if plugin_name in self.infos:
            raise PluginError(f"a plugin named {plugin_name!r} is already registered")
        self._add(plugin, info)
        if info.status == "error":
            raise PluginError(f"plugin {plugin_name!r} could not be registered: {info.error}")
        return info

    def _add(self, plugin: object, info: PluginInfo) -> None:
        self.infos[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:
            self._failed(info, exc)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        self._registries = None

    def _failed(self, info: PluginInfo, exc: BaseException) -> None:
        info.status = "error"
        info.error = f"{type(exc).__name__}: {exc}"
        import traceback

        info.traceback = "".join(traceback.format_exception(exc))
        self.infos[info.name] = info
        where = f" ({info.distribution} {info.version})" if info.distribution else ""
        sys.stderr.write(
            f"opus: warning: plugin {info.name!r}{where} failed to load: {info.error}\n"
        )

    def plugins(self) -> list[PluginInfo]:
        """Every plugin, built-ins first, with what each provides."""
        self.load()
        self._build()
        return list(self.infos.values())

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to load."""
        self.load()
        return [info for info in self.infos.values() if info.status == "error"]

    # -- what plugins provide ------------------------------------------------------

    def _impls(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """Each implementation of `hook` as (plugin name, function of the hook's arguments)."""
        caller = getattr(self.pm.hook, hook)
        found: list[tuple[str, Callable[..., Any]]] = []
        for impl in caller.get_hookimpls():  # in registration order: built-ins first
            found.append((impl.plugin_name, _bind(impl.function, impl.argnames)))
        return found

    def _build(self) -> dict[str, dict[str, type]]:
        self.load()
        if self._registries is not None:
            return self._registries
        for info in self.infos.values():
            for kind in (*KINDS, "processors"):
                info.provides[kind] = []
        registries: dict[str, dict[str, type]] = {}
        for kind in KINDS:
            registry: dict[str, type] = {}
            providers: dict[str, str] = {}
            for plugin_name, function in self._impls(f"opus_register_{kind}"):
                for cls in function() or ():
                    name = self._check_class(kind, plugin_name, cls)
                    if name in providers and providers[name] != plugin_name:
                        raise PluginError(
                            f"{SINGULAR[kind]} {name!r} is provided by both "
                            f"{self._describe(providers[name])} and {self._describe(plugin_name)}; "
                            "uninstall one, or list one in [opus] disable_plugins"
                        )
                    registry[name], providers[name] = cls, plugin_name
                    self.infos[plugin_name].provides[kind].append(name)
            registries[kind] = registry
            self._providers[kind] = providers
        for plugin_name, processor in self._processor_impls():
            self.infos[plugin_name].provides["processors"].append(processor.kind)
        self._registries = registries
        return registries

    def _describe(self, plugin_name: str) -> str:
        info = self.infos[plugin_name]
        if info.distribution:
            return f"{info.distribution} (plugin {plugin_name!r})"
        return f"plugin {plugin_name!r}"

    def _check_class(self, kind: str, plugin_name: str, cls: object) -> str:
        base = _BASES[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(
                f"plugin {plugin_name!r}: opus_register_{kind} returned {cls!r}, "
                f"which is not a {base.__name__} subclass"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {plugin_name!r}: {cls.__name__} has no `name`; set the class attribute"
            )
        return name

    def _processor_impls(self) -> list[tuple[str, TaskProcessor | type[TaskProcessor]]]:
        found: list[tuple[str, TaskProcessor | type[TaskProcessor]]] = []
        for plugin_name, function in self._impls("opus_register_processors"):
            for processor in function() or ():
                is_class = isinstance(processor, type) and issubclass(processor, TaskProcessor)
                if not (is_class or isinstance(processor, TaskProcessor)):
                    raise PluginError(
                        f"plugin {plugin_name!r}: opus_register_processors returned "
                        f"{processor!r}, which is not a TaskProcessor"
                    )
                found.append((plugin_name, processor))
        return found

    def registry(self, kind: str) -> dict[str, type]:
        """Name to class for `kind` ("runners", "persistence" or "loggers")."""
        return self._build()[kind]

    def runners(self) -> dict[str, type[Runner]]:
        """Every runner class by name."""
        return self.registry("runners")

    def provider(self, kind: str, name: str) -> PluginInfo:
        """The plugin that provides `name` of `kind`."""
        self._build()
        return self.infos[self._providers[kind][name]]

    def processors(self, logger: LoggerWrapper | None = None) -> list[TaskProcessor]:
        """Instances of every processor plugins register (classes made with `logger`)."""
        self._build()
        return [p(logger=logger) if isinstance(p, type) else p for _, p in self._processor_impls()]

    def observer(self, logger: LoggerWrapper) -> RunObserver | None:
        """A `RunObserver` that calls the lifecycle hooks, or None when no plugin implements any."""
        self.load()
        observer = HookObserver(self, logger)
        return observer if any(observer.impls.values()) else None


def _bind(function: Callable[..., Any], argnames: tuple[str, ...]) -> Callable[..., Any]:
    """Call `function` with just the keyword arguments it declares, as pluggy does."""

    def call(**kwargs: Any) -> Any:
        return function(**{name: kwargs[name] for name in argnames})

    return call


class HookObserver(RunObserver):
    """Turns the engine's lifecycle notifications into hook calls, one implementation at a time.

    Each implementation is called on its own so that one that raises is
    logged with its plugin's name and the others still run.
    """

    display_name = "lifecycle hooks"

    def __init__(self, manager: PluginManager, logger: LoggerWrapper) -> None:
        self.logger = logger
        self.impls = {
            hook: manager._impls(hook)
            for hook in (
                "opus_run_started",
                "opus_task_started",
                "opus_task_retrying",
                "opus_task_finished",
                "opus_run_finished",
            )
        }

    def _call(self, hook: str, **kwargs: Any) -> None:
        for plugin_name, function in self.impls[hook]:
            try:
                function(**kwargs)
            except Exception as exc:
                self.logger.error(
                    f"plugin {plugin_name!r} failed in {hook}: {type(exc).__name__}: {exc}"
                )

    def run_started(self, plan: Any) -> None:
        if self.impls["opus_run_started"]:
            self._call("opus_run_started", plan=plan)

    def task_started(self, task: Any, attempt: int) -> None:
        if self.impls["opus_task_started"]:
            self._call("opus_task_started", task=task, attempt=attempt)

    def task_retrying(self, task: Any, attempt: int, error: str, delay: float) -> None:
        if self.impls["opus_task_retrying"]:
            self._call("opus_task_retrying", task=task, attempt=attempt, error=error, delay=delay)

    def task_finished(self, task: Any, result: Any) -> None:
        if self.impls["opus_task_finished"]:
            self._call("opus_task_finished", task=task, result=result)

    def run_finished(self, report: Any) -> None:
        if self.impls["opus_run_finished"]:
            self._call("opus_run_finished", report=report)


_default: PluginManager | None = None


def default_manager() -> PluginManager:
    """The process-wide plugin manager of engines built without configuration."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default
