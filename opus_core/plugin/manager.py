"""Finding, blocking, loading and calling plugins: the only code that touches pluggy.

Plugins come from three places, in this order: the core's own
(`opus_core.plugin.defaults`, and those its caller adds: the command line adds its
commands as `builtin.commands`), the entry points of the group `opus` (each
loaded once per process, and only when not disabled), and the modules named in
`$OPUS_PLUGINS` (`opus -p`); `Tasks(plugins=[...])` registers more in-process.
A plugin whose `OPUS_PLUGIN_API_REQUIRES` excludes this opus is not registered.

Every hook is called through pluggy, so ordering, wrappers, `firstresult`,
tracing and call monitoring are pluggy's. What opus adds is a guard around
each implementation (`opus_core.plugin.guard`), which tells `failed` what a
plugin's implementation raised. `$OPUS_TRACE_PLUGINS` prints every hook call.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from opus_core.errors import OpusError, PluginError
from opus_core.plugin import PROJECT, spec
from opus_core.plugin.api import api_mismatch
from opus_core.plugin.guard import (
    LIFECYCLE_HOOKS,
    REGISTRATION_HOOKS,
    Answer,
    Guarded,
    Hooks,
    one_line,
)
from opus_core.plugin.registry import PluginInfo, Registry, kinds
from opus_core.plugin.trace import importing, tracer
from opus_core.version import __version__

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from opus_core.cli import Commands
    from opus_core.graph import Plan
    from opus_core.logger import LoggerWrapper
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.processor import TaskProcessor
    from opus_core.results import RunReport, TaskResult
    from opus_core.runners.base import Runner

ENTRY_POINT_GROUP = PROJECT
AUTOLOAD_ENV = "OPUS_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "OPUS_PLUGINS"
DEBUG_ENV = "OPUS_DEBUG"
TRACE_ENV = "OPUS_TRACE_PLUGINS"
BUILTIN = "builtin"
"""The core's own plugin; the per-engine ones are `builtin.log`, `builtin.resume`, ..."""


# -- discovery: once per process -------------------------------------------------------


_entry_points: dict[tuple[str, ...], list[EntryPoint]] = {}
_loaded: dict[tuple[str, str], tuple[object, BaseException | None]] = {}
_warned: set[str] = set()


def reset_caches() -> None:
    """Forget the entry points found, the plugins imported and the warnings given in this
    process: the next plugin manager finds, imports and warns again, as in a new process."""
    _entry_points.clear()
    _loaded.clear()
    _warned.clear()


def discover() -> list[EntryPoint]:
    """The entry points of the group `opus` on the current `sys.path`."""
    key = tuple(sys.path)
    found = _entry_points.get(key)
    if found is None:
        import importlib.metadata

        found = _entry_points[key] = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return found


def _load(entry_point: EntryPoint) -> tuple[object, BaseException | None]:
    """An entry point's object, or what importing it raised; imported once per process."""
    key = (entry_point.name, entry_point.value)
    if key not in _loaded:
        try:
            with importing(entry_point.name, entry_point.value):
                _loaded[key] = (entry_point.load(), None)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end opus
            _loaded[key] = (None, exc)
    return _loaded[key]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


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


def _reserved(name: str) -> bool:
    """Names of the core's own plugins, which no other plugin may take."""
    return name == BUILTIN or name.startswith(BUILTIN + ".")


def plugin_modules(names: Sequence[str]) -> str:
    """`$OPUS_PLUGINS` with `names` added (what `opus -p NAME` does)."""
    current = [n for n in os.environ.get(PLUGINS_ENV, "").split(",") if n]
    return ",".join([*current, *(n for n in names if n not in current)])


# -- the manager ----------------------------------------------------------------------------


class PluginManager:
    """Loads plugins and calls their hooks, with a typed method per hook.

    `disabled` are entry-point names not to load (`[opus] disable_plugins`),
    blocked through pluggy. `autoload=False` (or `$OPUS_DISABLE_PLUGIN_AUTOLOAD`)
    loads no entry points. Nothing is loaded until something is asked. `pm` is
    the pluggy manager, for its tracing and call monitoring. `core` are more of the
    core's own plugins, by their `builtin.*` name, registered right after `builtin`:
    the command line's commands (`builtin.commands`), which the engine never imports.
    """

    def __init__(
        self,
        disabled: Iterable[str] = (),
        autoload: bool | None = None,
        core: Mapping[str, object] | None = None,
    ) -> None:
        self.disabled = list(disabled)
        self.core = dict(core or {})
        for name in self.core:
            if not _reserved(name) or name == BUILTIN:
                raise ValueError(f"a core plugin is named {BUILTIN}.NAME, not {name!r}")
        self.autoload = not _truthy(os.environ.get(AUTOLOAD_ENV)) if autoload is None else autoload
        self.pm = Hooks(self)
        self.pm.add_hookspecs(spec)
        self.hook = self.pm.hook
        self.infos: dict[str, PluginInfo] = {}
        self.logger: LoggerWrapper | None = None
        """Where lifecycle-hook failures are reported (stderr when None)."""
        self._loaded = False
        self._registries: dict[str, Registry] | None = None
        self._processors: list[tuple[str, TaskProcessor | type[TaskProcessor]]] = []
        self._options: dict[str, type] = {}
        self._reported: set[tuple[str, str]] = set()
        self._starts_heard = True
        self._contexts_asked = False
        if _truthy(os.environ.get(TRACE_ENV)):
            self.pm.add_hookcall_monitoring(*tracer(sys.stderr))

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Register the built-ins, the entry points and `$OPUS_PLUGINS` (once)."""
        if self._loaded:
            return
        self._loaded = True
        from opus_core.plugin import defaults

        self._add(defaults, PluginInfo(BUILTIN, __version__, "opus-core", builtin=True))
        for name, plugin in self.core.items():
            self._add(plugin, PluginInfo(name, __version__, "opus-core", builtin=True))
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
        plugin, error = _load(entry_point)
        if error is not None:
            self.infos[info.name] = info
            self._broken(info.name, one_line(error), error, "failed to load")
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
            with importing(name, module_name):
                module = importlib.import_module(module_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.infos[info.name] = info
            self._broken(info.name, one_line(exc), exc, f"failed to load (-p / ${PLUGINS_ENV})")
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
        Raises `PluginError` if the plugin is invalid, requires another plugin API
        (`OPUS_PLUGIN_API_REQUIRES`) or its name is taken. `core` is for the core's
        own (`builtin.*`) plugins.
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
        if info is not None and self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
            if REGISTRATION_HOOKS.intersection(info.hooks):
                self._registries = None

    def _add(self, plugin: object, info: PluginInfo) -> None:
        """Register `plugin` with pluggy as `info.name`, its implementations guarded."""
        self.infos[info.name] = info
        info.plugin = plugin
        mismatch = api_mismatch(plugin)
        if mismatch is not None:
            self._broken(info.name, mismatch)
            return
        proxy = Guarded(plugin, info.name, self.pm)
        try:
            self.pm.register(proxy, name=info.name)
            self.pm.check_pending()  # every earlier plugin passed: a failure is this one's
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.pm.get_plugin(info.name) is proxy:
                self.pm.unregister(proxy)
            self._broken(info.name, " ".join(str(exc).split()), exc)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(proxy) or [])
        if REGISTRATION_HOOKS.intersection(info.hooks):
            self._registries = None  # what plugins provide is asked again

    # -- what a guard reports (see `opus_core.plugin.guard`) --------------------------------

    def failed(self, plugin: str, hook: str, exc: BaseException) -> None:
        """An implementation of `hook` in `plugin` raised `exc` (a wrapper: on either side of
        its `yield`). A registration hook's plugin is broken, a lifecycle hook's failure is
        reported once; any other hook changes what runs, so the command stops (`PluginError`)."""
        if hook in REGISTRATION_HOOKS:
            return self._broken(plugin, f"{hook} failed: {one_line(exc)}", exc)
        if hook not in LIFECYCLE_HOOKS:
            if isinstance(exc, OpusError):
                raise exc
            raise PluginError(f"plugin {plugin!r} failed in {hook}: {one_line(exc)}") from exc
        if (plugin, hook) in self._reported:
            return None
        self._reported.add((plugin, hook))
        message = f"plugin {plugin!r} failed in {hook}: {one_line(exc)}"
        if debugging():
            message += "\n" + _format(exc)
        if self.logger is not None:
            self.logger.error(message)
        else:
            warn(message)
        return None

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

    def _drop_broken(self) -> None:
        for name, info in self.infos.items():
            if info.status == "error" and self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)

    # -- what plugins provide -------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin, built-ins first, with what each provides."""
        self._collect()
        for info in self.infos.values():
            info.read_dist()
        return list(self.infos.values())

    def _ask(self, hook: str, **kwargs: Any) -> list[Answer]:
        """Call a registration hook: each answer with the plugin that gave it (an answer a
        wrapper added is its plugin's, the outermost one's)."""
        answers = []
        for answer in getattr(self.hook, hook)(**kwargs) or []:
            if not isinstance(answer, Answer):
                plugin = self.pm.outermost_wrapper(hook)
                try:
                    answer = Answer.checked(plugin, hook, answer)
                except PluginError as exc:
                    self._broken(plugin, f"a wrapper of {hook} {exc}")
                    continue
            if answer is not None:
                answers.append(answer)
        return answers

    def _collect(self) -> dict[str, Registry]:
        self.load()
        if self._registries is not None:
            return self._registries
        for info in self.infos.values():
            for names in info.provides.values():
                names.clear()
        hooks = (*(k.hook for k in kinds()), "opus_register_processors", "opus_plugin_options")
        asked = {hook: self._ask(hook) for hook in hooks}
        self._drop_broken()  # and what they answered, to any of the hooks, is left out
        for hook in hooks:
            asked[hook] = [a for a in asked[hook] if self.infos[a.plugin].status != "error"]
        registries: dict[str, Registry] = {}
        for kind in kinds():
            registry = registries[kind.section] = Registry(kind)
            for answer in asked[kind.hook]:
                provides = self.infos[answer.plugin].provides[kind.section]
                for cls in answer:
                    provides.append(cls.name)
                    conflict = registry.provide(cls, answer.plugin, self.infos)
                    if conflict is not None:
                        warn(conflict)
        self._processors = [
            (answer.plugin, processor)
            for answer in asked["opus_register_processors"]
            for processor in answer
        ]
        for plugin, processor in self._processors:
            self.infos[plugin].provides["processors"].append(processor.kind)
        self._options = {a.plugin: a[0] for a in asked["opus_plugin_options"]}
        self._registries = registries
        return registries

    def registry(self, section: str) -> Registry:
        """What plugins provide for `section`: "runners", "persistence" or "loggers"."""
        return self._collect()[section]

    def runners(self) -> Mapping[str, type[Runner]]:
        """Every runner class by name."""
        return self.registry("runners")

    def provider(self, section: str, name: str) -> PluginInfo:
        """The plugin that provides `name` in `section` ("runners", "persistence", "loggers")."""
        info = self.infos[self.registry(section).providers[name]]
        info.read_dist()
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
        self.pm.subset_hook_caller("opus_configure", others)(options=options, manager=self)

    def disabled_plugins(self) -> list[PluginInfo]:
        """Installed plugins that `[opus] disable_plugins` keeps from loading (never imported)."""
        return [info for info in self.plugins() if info.status == "disabled"]

    # -- hooks that change what opus does (a failure is a `PluginError` naming the plugin) ------

    def register_commands(self, commands: Commands) -> None:
        """Let every plugin add its `opus` subcommands."""
        self.load()
        self._ask("opus_register_commands", commands=commands)

    def load_tasks(self, path: Path) -> list[Task] | None:
        """The tasks of the manifest file `path`, from the first plugin that reads it."""
        self._collect()
        tasks: list[Task] | None = self.pm.checked(
            "opus_load_tasks", self.hook.opus_load_tasks(path=path), path=path
        )
        return tasks

    def modifies_tasks(self) -> bool:
        """Whether any plugin implements `opus_modify_tasks`."""
        self._collect()
        return bool(self.hook.opus_modify_tasks.get_hookimpls())

    def modify_tasks(self, tasks: list[Task], command: str, context: str) -> None:
        """Let plugins deselect or reorder `tasks` in place."""
        self.hook.opus_modify_tasks(tasks=tasks, command=command, context=context)

    def restores(self) -> bool:
        """Whether any plugin implements `opus_task_restore`."""
        self._collect()
        return bool(self.hook.opus_task_restore.get_hookimpls())

    def restore(
        self,
        task: Task,
        command: str,
        context: str,
        persistence: StatePersistence,
        values: Mapping[str, Any] | None = None,
        upstream: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """The values a plugin restores for `task` instead of running it, or None."""
        found = self.hook.opus_task_restore(
            task=task,
            command=command,
            context=context,
            persistence=persistence,
            values={} if values is None else values,
            upstream={} if upstream is None else upstream,
        )
        found = self.pm.checked("opus_task_restore", found, task=task)
        return None if found is None else dict(found)

    # -- lifecycle notifications (a failure is reported, and the run goes on) -------------------

    def run_started(self, plan: Plan) -> None:
        """Call `opus_run_started`; then see whether any plugin implements
        `opus_task_started`, which is called for every task only if one does."""
        self.hook.opus_run_started(plan=plan)
        self._starts_heard = bool(self.hook.opus_task_started.get_hookimpls())
        self._contexts_asked = bool(self.hook.opus_attempt_context.get_hookimpls())

    def task_started(self, task: Task, attempt: int) -> None:
        """Call `opus_task_started` (if a plugin implemented it when the run started)."""
        if self._starts_heard:
            self.hook.opus_task_started(task=task, attempt=attempt)

    def attempt_contexts(self, task: Task, attempt: int, runner: Runner) -> tuple[Any, ...]:
        """What `opus_attempt_context` returned for this attempt (if a plugin implemented it
        when the run started): the context managers to enter where it runs."""
        if not self._contexts_asked:
            return ()
        return tuple(self.hook.opus_attempt_context(task=task, attempt=attempt, runner=runner))

    def task_retrying(
        self, task: Task, attempt: int, error: str, delay: float, traceback: str | None = None
    ) -> None:
        """Call `opus_task_retrying`."""
        self.hook.opus_task_retrying(
            task=task, attempt=attempt, error=error, delay=delay, traceback=traceback
        )

    def task_finished(self, task: Task, result: TaskResult) -> None:
        """Call `opus_task_finished`."""
        self.hook.opus_task_finished(task=task, result=result)

    def run_finished(self, report: RunReport) -> None:
        """Call `opus_run_finished`."""
        self.hook.opus_run_finished(report=report)
