"""Finding, blocking, loading and calling plugins: the only code that touches pluggy.

Plugins come from three places, in this order: the core's own
(`opus_core.plugin.defaults`), the entry points of the group `opus`
(`importlib.metadata`, each loaded once per process and only when its
plugin is not disabled), and the modules named in `$OPUS_PLUGINS` (`opus -p`).
`Tasks(plugins=[...])` registers more in-process.

Every hook is called through pluggy, so ordering, wrappers, `firstresult`,
tracing and call monitoring are pluggy's. On top of that, each plain
(non-wrapper) implementation of a registration or lifecycle hook is guarded
when its plugin is registered: a registration hook that raises or answers
with the wrong type marks its plugin as broken (`opus plugins list` shows
`error`), and a lifecycle hook that raises is reported once, naming the
plugin and the hook, while the other implementations and the run go on.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

from opus_core.errors import PluginError
from opus_core.plugin import PROJECT, hookimpl, spec
from opus_core.plugin.registry import Registry, kinds
from opus_core.version import __version__

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from opus_core.cli import Commands
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.processor import TaskProcessor
    from opus_core.report import RunReport, TaskResult
    from opus_core.runners.base import Runner

ENTRY_POINT_GROUP = PROJECT
AUTOLOAD_ENV = "OPUS_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "OPUS_PLUGINS"
DEBUG_ENV = "OPUS_DEBUG"
BUILTIN = "builtin"
"""The core's own plugin; the per-engine ones are `builtin.log`, `builtin.resume`, ..."""

REGISTRATION_HOOKS = frozenset(
    {
        "opus_register_runners",
        "opus_register_persistence",
        "opus_register_loggers",
        "opus_register_processors",
        "opus_register_commands",
        "opus_plugin_options",
    }
)
LIFECYCLE_HOOKS = frozenset(
    {
        "opus_run_started",
        "opus_task_started",
        "opus_task_retrying",
        "opus_task_finished",
        "opus_run_finished",
    }
)


@dataclass(slots=True)
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
        default_factory=lambda: {"runners": [], "persistence": [], "loggers": [], "processors": []}
    )
    hooks: list[str] = field(default_factory=list)
    plugin: object = None
    registered: object = None
    """What pluggy holds for the plugin (its hookimpls, guarded), while registered."""
    failure: str = "is broken"
    """How messages introduce `error`: "failed to load" or "is broken"."""
    dist: Any = None
    """The `importlib.metadata.Distribution`, read for name and version only when shown."""

    def _read_dist(self) -> None:
        if self.dist is not None:
            metadata = self.dist.metadata  # parsed on each access: once here
            self.distribution, self.version = metadata["Name"], metadata["Version"]
            self.dist = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `opus plugins list --json`."""
        self._read_dist()
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

    def describe(self) -> str:
        """How messages name the plugin: `plugin 'x' (dist 1.0)`."""
        self._read_dist()
        if not self.distribution:
            return f"plugin {self.name!r}"
        return f"plugin {self.name!r} ({self.distribution} {self.version or '?'})"


# -- discovery: once per process -------------------------------------------------------


_entry_points: dict[tuple[str, ...], list[EntryPoint]] = {}
_loaded: dict[tuple[str, str], object] = {}
_warned: set[str] = set()


class _LoadFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def discover() -> list[EntryPoint]:
    """The entry points of the group `opus` on the current `sys.path`."""
    key = tuple(sys.path)
    found = _entry_points.get(key)
    if found is None:
        import importlib.metadata

        found = _entry_points[key] = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return found


def _load(entry_point: EntryPoint) -> object:
    """Import an entry point's object once per process; `_LoadFailed` carries what it raised."""
    key = (entry_point.name, entry_point.value)
    if key not in _loaded:
        try:
            _loaded[key] = entry_point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end opus
            _loaded[key] = _LoadFailed(exc)
    loaded = _loaded[key]
    if isinstance(loaded, _LoadFailed):
        raise loaded
    return loaded


def debugging() -> bool:
    """True under `opus --debug` (`$OPUS_DEBUG`): warnings carry their tracebacks."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def warn(message: str, traceback: str | None = None) -> None:
    """One `opus: warning:` line on stderr, once per process (the traceback under --debug)."""
    if message in _warned:
        return
    _warned.add(message)
    sys.stderr.write(f"opus: warning: {message}\n")
    if traceback and debugging():
        sys.stderr.write(traceback)


def _format(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def _one_line(exc: BaseException) -> str:
    """`Type: message` on one line, whatever the exception does (`SystemExit`: its code)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: code {exc.code!r}"
    from opus_core.errors import OpusError, describe_exception

    text = " ".join(describe_exception(exc).split())
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OpusError) else text


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# -- the manager ----------------------------------------------------------------------------


class PluginManager:
    """Loads plugins and calls their hooks, with a typed method per hook.

    `disabled` are entry-point names not to load (`[opus] disable_plugins`),
    blocked through pluggy. `autoload=False` (or `$OPUS_DISABLE_PLUGIN_AUTOLOAD`)
    loads no entry points. Nothing is loaded until something is asked.
    """

    def __init__(self, disabled: Iterable[str] = (), autoload: bool | None = None) -> None:
        self.disabled = list(disabled)
        self.autoload = not _truthy(os.environ.get(AUTOLOAD_ENV)) if autoload is None else autoload
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(spec)
        self.hook = self.pm.hook
        self.infos: dict[str, PluginInfo] = {}
        self.logger: LoggerWrapper | None = None
        """Where lifecycle-hook failures are reported (stderr when None)."""
        self._loaded = False
        self._registries: dict[str, Registry] | None = None
        self._processors: list[tuple[str, TaskProcessor | type[TaskProcessor]]] = []
        self._options: dict[str, type] = {}
        self._answers: dict[str, list[tuple[str, list[Any]]]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._codes: dict[object, str] = {}
        self._answered: dict[str, str] = {}

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Register the built-ins, the entry points and `$OPUS_PLUGINS` (once)."""
        if self._loaded:
            return
        self._loaded = True
        from opus_core.plugin import defaults

        self._add(defaults, PluginInfo(BUILTIN, __version__, "opus-core", builtin=True))
        for name in self.disabled:
            if _reserved(name):
                warn(f"[opus] disable_plugins names {name!r}: the core's own plugins stay enabled")
            else:
                self.pm.set_blocked(name)
        if self.autoload:
            for entry_point in discover():
                self._load_entry_point(entry_point)
            installed = {info.name for info in self.infos.values() if not info.builtin}
            for name in self.disabled:
                if name not in installed and not _reserved(name):
                    names = ", ".join(sorted(installed)) or "none"
                    warn(
                        f"[opus] disable_plugins names {name!r}, which no installed plugin is "
                        f"called; installed plugins: {names}"
                    )
        for entry in os.environ.get(PLUGINS_ENV, "").split(","):
            if entry.strip():
                self._load_module(entry.strip())

    def _load_entry_point(self, entry_point: EntryPoint) -> None:
        info = PluginInfo(entry_point.name, None, None, builtin=False, dist=entry_point.dist)
        if entry_point.name in self.infos or _reserved(entry_point.name):
            other = self.infos.get(entry_point.name)
            info.status = "error"
            info.failure = "is not loaded"
            info.error = (
                f"entry point name {info.name!r} is also used by {other.describe()}"
                if other is not None
                else f"the name {info.name!r} is the core's own; rename the entry point"
            )
            warn(f"{info.describe()} is not loaded: {info.error}")
            self.infos[f"{info.name}#{len(self.infos)}"] = info  # listed, never looked up
            return
        if self.pm.is_blocked(entry_point.name):
            info.status = "disabled"
            self.infos[info.name] = info
            return
        try:
            plugin = _load(entry_point)
        except _LoadFailed as failed:
            self.infos[info.name] = info
            self._broken(info.name, _one_line(failed.error), failed.error, "failed to load")
            return
        self._add(plugin, info)

    def _load_module(self, spec: str) -> None:
        """Load a `$OPUS_PLUGINS` entry: `module`, or `name=module` to give it a name."""
        name, _, module_name = spec.rpartition("=")
        name, module_name = (name or module_name).strip(), module_name.strip()
        if name in self.infos or _reserved(name) or not name or not module_name:
            holder = self.infos.get(name)
            module = sys.modules.get(module_name)
            if holder is None or module is None or holder.plugin is not module:
                warn(f"-p / ${PLUGINS_ENV}: {spec!r} is not loaded: the name is taken or empty")
            return
        info = PluginInfo(name, None, None, builtin=False)
        try:
            module = importlib.import_module(module_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.infos[info.name] = info
            self._broken(info.name, _one_line(exc), exc, f"failed to load (-p / ${PLUGINS_ENV})")
            return
        if self._registered(module) is not None:
            return  # installed too, and loaded through its entry point
        self._add(module, info)

    def register(
        self, plugin: object, name: str | None = None, *, core: bool = False
    ) -> PluginInfo:
        """Register an in-process plugin (a module, or any object with hookimpls).

        Registering a plugin that is already registered — a module that is also
        installed, loaded through its entry point — returns what is known of it.
        Raises `PluginError` if the plugin is invalid or its name is taken.
        `core` is for the core's own (`builtin.*`) plugins.
        """
        self.load()
        known = self._registered(plugin)
        if known is not None:
            return known
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if plugin_name in self.infos or (_reserved(plugin_name) and not core):
            raise PluginError(
                f"a plugin named {plugin_name!r} is already registered; pass another name"
            )
        info = PluginInfo(
            plugin_name, __version__ if core else None, "opus-core" if core else None, core
        )
        self._add(plugin, info)
        if info.status == "error":
            del self.infos[plugin_name]
            raise PluginError(f"plugin {plugin_name!r} cannot be registered: {info.error}")
        return info

    def _registered(self, plugin: object) -> PluginInfo | None:
        return next((i for i in self.infos.values() if i.plugin is plugin), None)

    def unregister(self, name: str) -> None:
        """Remove the plugin registered as `name` (nothing if there is none)."""
        info = self.infos.pop(name, None)
        if info is not None and info.registered is not None:
            self.pm.unregister(info.registered)
            info.registered = None
            if REGISTRATION_HOOKS.intersection(info.hooks):
                self._registries = None

    def _add(self, plugin: object, info: PluginInfo) -> None:
        self.infos[info.name] = info
        info.plugin = plugin
        proxy = _Guarded(plugin)
        for attribute, opts in self._hookimpls(plugin):
            function = getattr(plugin, attribute)
            self._codes[getattr(function, "__code__", None)] = info.name
            setattr(proxy, attribute, self._guard(function, opts, info.name, attribute))
        try:
            self.pm.register(proxy, name=info.name)
            self.pm.check_pending()  # every earlier plugin passed: a failure is this one's
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.is_registered(proxy):
                self.pm.unregister(proxy)
            self._broken(info.name, " ".join(str(exc).split()), exc)
            return
        info.registered = proxy
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(proxy) or [])
        if REGISTRATION_HOOKS.intersection(info.hooks):
            self._registries = None  # what plugins provide is asked again

    def _hookimpls(self, plugin: object) -> list[tuple[str, Any]]:
        """The hook implementations of `plugin`, as pluggy parses them (its
        `parse_hookimpl_opts` on every attribute). A module's are parsed once per process:
        every engine registers the same plugin modules, and looking at each of their
        attributes is most of what registering costs."""
        module = plugin if isinstance(plugin, types.ModuleType) else None
        if module is not None and module in _MODULE_HOOKIMPLS:
            return _MODULE_HOOKIMPLS[module]
        found = []
        for attribute in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attribute)
            if opts is not None:
                found.append((attribute, opts))
        if module is not None:
            _MODULE_HOOKIMPLS[module] = found
        return found

    def _guard(self, function: Any, opts: Mapping[str, Any], plugin: str, hook: str) -> Any:
        """`function` as pluggy will call it, guarded where opus promises that a failure
        stays the plugin's: a lifecycle hook's is reported, a registration hook's marks
        the plugin broken (and so does a wrong answer), and the call goes on without it.

        The guard keeps the function's name, signature (`__wrapped__`) and hookimpl
        options, so pluggy sees the same implementation with the same options.
        """

        def failed(exc: BaseException) -> None:
            if hook in LIFECYCLE_HOOKS:
                self._hook_failed(plugin, hook, exc)
            else:
                self._broken(plugin, f"{hook} failed: {_one_line(exc)}", exc)

        def notify(*args: Any) -> None:  # a lifecycle hook: called for every task
            try:
                function(*args)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                failed(exc)

        def answer(*args: Any) -> Any:  # a registration hook: its answer is checked and kept
            try:
                result = _checked(hook, function(*args))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                failed(exc)
                return None
            if result is not None:
                self._answers.setdefault(hook, []).append((plugin, result))
            return result

        def answered(*args: Any) -> Any:
            result = function(*args)
            if result is not None:
                self._answered[hook] = plugin  # for messages about what it returned
            return result

        if hook not in LIFECYCLE_HOOKS and hook not in REGISTRATION_HOOKS:
            # A failure is the caller's to report (`_call`), naming the plugin.
            spec_opts = self.pm.parse_hookspec_opts(spec, hook)
            firstresult = bool(spec_opts and spec_opts.get("firstresult"))
            wrapper = opts.get("wrapper") or opts.get("hookwrapper")
            guarded = answered if firstresult and not wrapper else function
        elif opts.get("wrapper") or opts.get("hookwrapper"):
            guarded = _guarded_wrapper(function, failed, new_style=bool(opts.get("wrapper")))
        else:
            guarded = notify if hook in LIFECYCLE_HOOKS else answer
        if guarded is function:
            if self.pm.parse_hookimpl_opts(types.SimpleNamespace(impl=function), "impl") == opts:
                return function  # it carries its own marking
            guarded = lambda *args: function(*args)  # noqa: E731  (to carry the marking)
        # Marked by pluggy's own marker, even where the original sat on a staticmethod.
        marked: Any = hookimpl(**opts)(functools.wraps(function)(guarded))
        return marked

    def _broken(
        self, name: str, error: str, exc: BaseException | None = None, what: str = "is broken"
    ) -> None:
        """Mark plugin `name` as `error`: one warning line (its traceback under --debug)."""
        info = self.infos[name]
        if info.status == "error":
            return
        info.status = "error"
        info.error = error
        info.failure = what
        info.traceback = _format(exc) if exc is not None else None
        warn(f"{info.describe()} {what}: {error}", info.traceback)

    def _hook_failed(self, plugin: str, hook: str, exc: BaseException) -> None:
        if (plugin, hook) in self._reported:
            return
        self._reported.add((plugin, hook))
        message = f"plugin {plugin!r} failed in {hook}: {_one_line(exc)}"
        if debugging():
            message += "\n" + _format(exc)
        if self.logger is not None:
            self.logger.error(message)
        else:
            warn(message)

    def _culprit(self, exc: BaseException) -> str | None:
        """The plugin whose hook implementation raised `exc`, from its traceback."""
        tb: TracebackType | None = exc.__traceback__
        while tb is not None:
            name = self._codes.get(tb.tb_frame.f_code)
            if name is not None:
                return name
            tb = tb.tb_next
        return None

    def _drop_broken(self) -> None:
        for info in self.infos.values():
            if info.status == "error" and info.registered is not None:
                self.pm.unregister(info.registered)
                info.registered = None

    # -- what plugins provide -------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin, built-ins first, with what each provides."""
        self._collect()
        for info in self.infos.values():
            info._read_dist()
        return list(self.infos.values())

    def _ask(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call a registration hook, then drop the plugins its guards found broken."""
        results: list[Any] = getattr(self.hook, hook)(**kwargs) or []
        self._drop_broken()
        return results

    def _collect(self) -> dict[str, Registry]:
        self.load()
        if self._registries is not None:
            return self._registries
        self._answers = {}
        for info in self.infos.values():
            for names in info.provides.values():
                names.clear()
        asked = {
            hook: self._ask(hook)
            for hook in (
                *(kind.hook for kind in kinds()),
                "opus_register_processors",
                "opus_plugin_options",
            )
        }
        self._drop_broken()
        registries: dict[str, Registry] = {}
        for kind in kinds():
            registry = registries[kind.section] = Registry(kind)
            for cls in self._provided(kind.hook, asked[kind.hook]):
                provider = self._provider(kind.hook, cls)
                name: str = cls.name
                if name in registry.providers and registry.providers[name] != provider:
                    first = self.infos[registry.providers[name]].describe()
                    registry.conflicts[name] = (
                        f"{kind.singular} {name!r} is provided by both {first} and "
                        f"{self.infos[provider].describe()}; uninstall one, or list one in "
                        "[opus] disable_plugins"
                    )
                    warn(registry.conflicts[name])
                    self.infos[provider].provides[kind.section].append(name)
                    continue
                registry.classes[name], registry.providers[name] = cls, provider
                self.infos[provider].provides[kind.section].append(name)
        self._processors = []
        hook = "opus_register_processors"
        for processor in self._provided(hook, asked[hook]):
            provider = self._provider(hook, processor)
            self._processors.append((provider, processor))
            self.infos[provider].provides["processors"].append(processor.kind)
        self._options = {
            plugin: answer[0]
            for plugin, answer in self._answers.get("opus_plugin_options", [])
            if self.infos[plugin].status != "error"
        }
        self._registries = registries
        return registries

    def _provided(self, hook: str, results: list[Any]) -> list[Any]:
        """The items of a registration hook's results, without those of broken plugins."""
        items = [item for result in results for item in (result or ())]
        return [item for item in items if self.infos[self._provider(hook, item)].status != "error"]

    def _provider(self, hook: str, item: object) -> str:
        for plugin, answer in self._answers.get(hook, []):
            if any(item is given for given in answer):
                return plugin
        return BUILTIN  # added by a hook wrapper: reported with the core

    def registry(self, section: str) -> Registry:
        """What plugins provide for `section`: "runners", "persistence" or "loggers"."""
        return self._collect()[section]

    def runners(self) -> Mapping[str, type[Runner]]:
        """Every runner class by name."""
        return self.registry("runners")

    def provider(self, section: str, name: str) -> PluginInfo:
        """The plugin that provides `name` in `section` ("runners", "persistence", "loggers")."""
        info = self.infos[self.registry(section).providers[name]]
        info._read_dist()
        return info

    def processors(self, logger: LoggerWrapper | None = None) -> list[TaskProcessor]:
        """Instances of every processor plugins register (classes made with `logger`)."""
        self._collect()
        return [p(logger=logger) if isinstance(p, type) else p for _, p in self._processors]

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to load or register."""
        return [info for info in self.plugins() if info.status == "error"]

    def options_class(self, plugin: str) -> type | None:
        """The class of `plugin`'s options (`opus_plugin_options`), if it takes any."""
        self._collect()
        return self._options.get(plugin)

    def configure(self, plugin: str, options: object) -> None:
        """Hand `plugin` its options through its own `opus_configure`, and no one else's."""
        others = [p for name, p in self.pm.list_name_plugin() if name != plugin]
        self._call(self.pm.subset_hook_caller("opus_configure", others), options=options)

    def disabled_plugins(self) -> list[PluginInfo]:
        """Installed plugins that `[opus] disable_plugins` keeps from loading (never imported)."""
        return [info for info in self.plugins() if info.status == "disabled"]

    # -- hooks that change what opus does -----------------------------------------------------

    def _call(self, caller: Callable[..., Any], **kwargs: Any) -> Any:
        """Call a hook; what a plugin raises (other than an `OpusError`) names the plugin."""
        from opus_core.errors import OpusError

        try:
            return caller(**kwargs)
        except (OpusError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end opus
            culprit = self._culprit(exc)
            hook = getattr(caller, "name", "a hook")
            who = f"plugin {culprit!r}" if culprit else "a plugin"
            raise PluginError(f"{who} failed in {hook}: {_one_line(exc)}") from exc

    def register_commands(self, commands: Commands) -> None:
        """Let every plugin add its `opus` subcommands."""
        self.load()
        self._ask("opus_register_commands", commands=commands)

    def load_tasks(self, path: Path) -> list[Task] | None:
        """The tasks of the manifest file `path`, from the first plugin that reads it."""
        from opus_core.errors import OpusError
        from opus_core.manifest import Task

        self._collect()
        found = self._call(self.hook.opus_load_tasks, path=path)
        if found is None:
            return None
        who = f"plugin {self._answered.get('opus_load_tasks', '?')!r}"
        if isinstance(found, (str, bytes, Mapping)) or not isinstance(found, Iterable):
            raise PluginError(
                f"{who}: opus_load_tasks returned {type(found).__name__} for {path}; "
                "return a list of Task, or None for a file the plugin does not read"
            )
        try:
            tasks = list(found)  # a generator runs here
        except (OpusError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            raise PluginError(
                f"{who} failed in opus_load_tasks for {path}: {_one_line(exc)}"
            ) from exc
        for task in tasks:
            if not isinstance(task, Task):
                raise PluginError(
                    f"{who}: opus_load_tasks returned {task!r} for {path}, not a Task"
                )
        return tasks

    def modifies_tasks(self) -> bool:
        """Whether any plugin implements `opus_modify_tasks`."""
        self._collect()
        return bool(self.hook.opus_modify_tasks.get_hookimpls())

    def modify_tasks(self, tasks: list[Task], command: str, context: str) -> None:
        """Let plugins deselect or reorder `tasks` in place."""
        self._call(self.hook.opus_modify_tasks, tasks=tasks, command=command, context=context)

    def restores(self) -> bool:
        """Whether any plugin implements `opus_task_restore`."""
        self._collect()
        return bool(self.hook.opus_task_restore.get_hookimpls())

    def restore(
        self, task: Task, command: str, context: str, persistence: StatePersistence
    ) -> dict[str, Any] | None:
        """The values a plugin restores for `task` instead of running it, or None."""
        found = self._call(
            self.hook.opus_task_restore,
            task=task,
            command=command,
            context=context,
            persistence=persistence,
        )
        if found is None:
            return None
        if not isinstance(found, Mapping):
            who = self._answered.get("opus_task_restore", "?")
            raise PluginError(
                f"plugin {who!r}: opus_task_restore returned {type(found).__name__} for task "
                f"{task.task_id!r}; return a dict of values, or None to run the task"
            )
        return dict(found)

    # -- lifecycle notifications ------------------------------------------------------------

    def _notify(self, caller: pluggy.HookCaller, **kwargs: Any) -> None:
        try:
            caller(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # only a wrapper gets here: plain ones are guarded
            self._hook_failed(self._culprit(exc) or "?", caller.name, exc)

    def run_started(self, plan: Plan) -> None:
        """Call `opus_run_started`."""
        self._notify(self.hook.opus_run_started, plan=plan)

    def task_started(self, task: Task, attempt: int) -> None:
        """Call `opus_task_started`."""
        self._notify(self.hook.opus_task_started, task=task, attempt=attempt)

    def task_retrying(
        self, task: Task, attempt: int, error: str, delay: float, traceback: str | None = None
    ) -> None:
        """Call `opus_task_retrying`."""
        self._notify(
            self.hook.opus_task_retrying,
            task=task,
            attempt=attempt,
            error=error,
            delay=delay,
            traceback=traceback,
        )

    def task_finished(self, task: Task, result: TaskResult) -> None:
        """Call `opus_task_finished`."""
        self._notify(self.hook.opus_task_finished, task=task, result=result)

    def run_finished(self, report: RunReport) -> None:
        """Call `opus_run_finished`."""
        self._notify(self.hook.opus_run_finished, report=report)


def _reserved(name: str) -> bool:
    """Names of the core's own plugins, which no other plugin may take."""
    return name == BUILTIN or name.startswith(BUILTIN + ".")


def _guarded_wrapper(
    function: Any, failed: Callable[[BaseException], None], new_style: bool
) -> Any:
    """A hook wrapper that, should it fail before or after its `yield`, is reported by
    `failed` and the call goes on as if it were not there."""

    def guarded(*args: Any) -> Any:
        try:
            wrapper = function(*args)
            next(wrapper)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            failed(exc)
            return (yield)
        try:
            outcome = yield
        except BaseException as inner:  # a new-style wrapper is told what the others raised
            try:
                wrapper.throw(inner)
            except StopIteration as stop:
                return stop.value
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                if exc is not inner:
                    failed(exc)
            raise
        try:
            wrapper.send(outcome)
        except StopIteration as stop:
            return stop.value
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            failed(exc)
            return outcome if new_style else None
        wrapper.close()
        failed(RuntimeError("the wrapper yielded more than once"))
        return outcome if new_style else None

    return guarded


_MODULE_HOOKIMPLS: dict[types.ModuleType, list[tuple[str, Any]]] = {}
"""Plugin modules' hook implementations, parsed once (modules live as long as the process)."""


class _Guarded:
    """What pluggy registers for a plugin: its hookimpls, the plain ones guarded."""

    def __init__(self, plugin: object) -> None:
        self.__plugin = plugin

    def __repr__(self) -> str:
        return repr(self.__plugin)


def _checked(hook: str, result: Any) -> list[Any] | None:
    """A registration hook's answer as a list, or `PluginError` saying what is wrong with it."""
    if hook == "opus_register_commands":
        return None
    if hook == "opus_plugin_options":
        if result is None or isinstance(result, type):
            return None if result is None else [result]
        raise PluginError(f"returned {result!r}; return the class of the options, or None")
    if result is None:
        return None
    if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        raise PluginError(f"returned {result!r}; return a list")
    items = list(result)
    if hook == "opus_register_processors":
        from opus_core.processor import TaskProcessor

        for item in items:
            is_class = isinstance(item, type) and issubclass(item, TaskProcessor)
            if not (is_class or isinstance(item, TaskProcessor)):
                raise PluginError(f"returned {item!r}, which is not a TaskProcessor")
        return items
    kind = next(k for k in kinds() if k.hook == hook)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, kind.base)):
            raise PluginError(f"returned {item!r}, which is not a {kind.base.__name__} subclass")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{item.__name__} has no `name`; set the class attribute")
    return items


def plugin_modules(names: Sequence[str]) -> str:
    """`$OPUS_PLUGINS` with `names` added (what `opus -p NAME` does)."""
    current = [n for n in os.environ.get(PLUGINS_ENV, "").split(",") if n]
    return ",".join([*current, *(n for n in names if n not in current)])
