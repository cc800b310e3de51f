"""What opus puts around each hook implementation, so that a failure stays its plugin's.

pluggy registers, for each plugin, a `Guarded` view of it: the same attributes,
each hook implementation replaced by a guard that takes the same arguments.
`Hooks` (pluggy's `PluginManager`, subclassed as pytest subclasses it) reads
the implementations' options from the plugin itself, so ordering, wrappers and
`firstresult` are exactly the plugin's. A guard knows its plugin's name — the
`HookImpl.plugin_name` pluggy records — and reports what the implementation
raises, or answers wrongly, to the owner's `failed`; a wrapper's generator is
relayed, so what pluggy sends or throws reaches it unchanged.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Protocol, cast

import pluggy

from opus_core.errors import OpusError, PluginError
from opus_core.plugin import PROJECT
from opus_core.plugin.registry import kinds

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
"""Hooks whose implementations say what a plugin provides: one that fails breaks its plugin."""

LIFECYCLE_HOOKS = frozenset(
    {
        "opus_run_started",
        "opus_task_started",
        "opus_task_retrying",
        "opus_task_finished",
        "opus_run_finished",
    }
)
"""Notifications: one that fails is reported, and the run goes on."""


class Owner(Protocol):
    """Who hears about failures: the opus `PluginManager`."""

    def failed(self, plugin: str, hook: str, exc: BaseException) -> None:
        """`plugin`'s implementation of `hook` raised `exc`, or answered wrongly."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, whatever the exception does (`SystemExit`: its code)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: code {exc.code!r}"
    from opus_core.errors import describe_exception

    text = " ".join(describe_exception(exc).split())
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OpusError) else text


class Hooks(pluggy.PluginManager):
    """pluggy's plugin manager for the project `opus`, with the owner guards report to.

    `parse_hookimpl_opts` is pluggy's documented point of customisation (pytest's
    `PytestPluginManager` overrides it too): for a `Guarded` plugin it gives the
    options of the plugin's own implementation behind each guard.
    """

    def __init__(self, owner: Owner) -> None:
        super().__init__(PROJECT)
        self.owner = owner

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        """The hookimpl options of `plugin.<name>` (of what it guards, for a `Guarded`).

        `hookimpl` written above `staticmethod` or `classmethod` marks the method
        object, which pluggy reads only from 1.7 on: it is read here for every pluggy.
        """
        if isinstance(plugin, Guarded):
            opts = plugin.options(name)
            return None if opts is None else pluggy.HookimplOpts(**opts)
        found = super().parse_hookimpl_opts(plugin, name)
        if found is None:
            method = inspect.getattr_static(plugin, name, None)
            if isinstance(method, staticmethod | classmethod):
                marked = getattr(method, self.project_name + "_impl", None)
                found = cast(pluggy.HookimplOpts, marked) if isinstance(marked, dict) else None
        return found

    def outermost_wrapper(self, hook: str, default: str = "builtin") -> str:
        """The plugin of the wrapper of `hook` pluggy calls first: the last word on an answer."""
        impls = getattr(self.hook, hook).get_hookimpls()
        wrappers = [i.plugin_name for i in impls if i.wrapper or i.hookwrapper]
        return wrappers[-1] if wrappers else default

    def checked(self, hook: str, found: Any, **kwargs: Any) -> Any:
        """What a call of `hook` answered, checked as each implementation's answer is (a
        wrapper may have changed it): `PluginError` naming the outermost wrapper's plugin."""
        if found is None:
            return None
        return CHECKS[hook](self.outermost_wrapper(hook), hook, found, kwargs)

    def implementations(self, plugin: object) -> list[tuple[str, pluggy.HookimplOpts]]:
        """The hook implementations of `plugin` as pluggy finds them: attribute and options.

        A module's are read once per process: every engine registers the same modules.
        """
        if isinstance(plugin, types.ModuleType) and plugin in _MODULES:
            return _MODULES[plugin]
        found = []
        for attribute in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attribute)
            if opts is not None:
                found.append((attribute, opts))
        if isinstance(plugin, types.ModuleType):
            _MODULES[plugin] = found
        return found


_MODULES: dict[types.ModuleType, list[tuple[str, pluggy.HookimplOpts]]] = {}


def reset_caches() -> None:
    """Forget the hook implementations found in plugin modules (each module is read once
    per process): a module imported again is read again."""
    _MODULES.clear()


class Guarded:
    """A plugin as pluggy registers it: each of its hook implementations, guarded.

    Each guard is an attribute of its own (what `dir` lists), a function taking
    the same arguments as the implementation it guards.
    """

    def __init__(self, plugin: object, name: str, hooks: Hooks) -> None:
        self.__plugin = plugin
        self.__opts: dict[str, pluggy.HookimplOpts] = {}
        for attribute, opts in hooks.implementations(plugin):
            self.__opts[attribute] = opts
            function = getattr(plugin, attribute)
            hook = opts.get("specname") or attribute
            wrapper = bool(opts.get("wrapper") or opts.get("hookwrapper"))
            setattr(self, attribute, _guard(hooks.owner, name, hook, function, wrapper))

    def options(self, attribute: str) -> pluggy.HookimplOpts | None:
        """The options of the implementation guarded as `attribute`, if it is one."""
        return self.__opts.get(attribute)

    def __dir__(self) -> Iterable[str]:
        return list(self.__opts)

    def __repr__(self) -> str:
        return repr(self.__plugin)


ACTIVE: dict[int, tuple[str, str]] = {}
"""The hook implementation each thread is in now, by thread id: `(plugin, hook)` — what a
stop that does not end names as what it waits for."""


def _guard(
    owner: Owner, plugin: str, hook: str, function: Callable[..., Any], wrapper: bool
) -> Any:
    """`function`, an implementation of `hook` in `plugin`, as pluggy will call it."""
    if wrapper and not inspect.isgeneratorfunction(function):
        return function  # pluggy rejects it, saying why
    names = _parameters(function)
    check = CHECKS.get(hook)

    def failed(exc: BaseException) -> None:
        owner.failed(plugin, hook, exc)

    def relayed(*args: Any) -> Generator[None, Any, Any]:
        return relay(function(*args), failed)

    def plain(*args: Any) -> Any:
        thread = threading.get_ident()
        outer = ACTIVE.get(thread)
        ACTIVE[thread] = (plugin, hook)
        try:
            result = function(*args)
            if check is None or result is None:
                return result
            return check(plugin, hook, result, dict(zip(names, args, strict=True)))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end opus
            failed(exc)
            return None
        finally:
            if outer is None:
                ACTIVE.pop(thread, None)
            else:
                ACTIVE[thread] = outer

    guarded = _forwarder(tuple(names), wrapper)(relayed if wrapper else plain)
    guarded.__name__ = getattr(function, "__name__", hook)
    return guarded


def relay(
    wrapper: Generator[Any, Any, Any], failed: Callable[[BaseException], None]
) -> Generator[None, Any, Any]:
    """Run a plugin's hook wrapper inside pluggy's call, reporting what it raises itself.

    What pluggy sends (the result, or for `hookwrapper=True` the `Result`) or
    throws (what the implementations inside raised) goes to `wrapper` as it is.
    If `wrapper` raises before or after its `yield`, `failed` hears of it and
    the call goes on as if the wrapper were not there.
    """
    try:
        next(wrapper)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        failed(RuntimeError("the wrapper did not yield") if isinstance(exc, StopIteration) else exc)
        return (yield)
    try:
        sent = yield
    except BaseException as thrown:
        try:
            wrapper.throw(thrown)
        except StopIteration as stop:
            return stop.value
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if exc is not thrown:
                failed(exc)
            raise thrown from None
        wrapper.close()
        failed(RuntimeError("the wrapper yielded twice"))
        raise
    try:
        wrapper.send(sent)
    except StopIteration as stop:
        return stop.value
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        failed(exc)
        return sent
    wrapper.close()
    failed(RuntimeError("the wrapper yielded twice"))
    return sent


def _parameters(function: Callable[..., Any]) -> list[str]:
    """The arguments pluggy passes to `function`: its positional parameters without defaults."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in positional and p.default is p.empty]


@functools.cache
def _forwarder(names: tuple[str, ...], generator: bool) -> Callable[[Any], Any]:
    """A maker of functions with the parameters `names` that pass them on to a target.

    pluggy decides which arguments to pass an implementation from its parameters;
    a guard written with the implementation's own parameters gets the same ones,
    whatever way pluggy reads them. Written as source, as `dataclasses` writes
    `__init__`, and made once per list of names.
    """
    target = "target"
    while target in names:
        target += "_"
    arguments = ", ".join(names)
    call = f"{target}({arguments})"
    body = f"return (yield from {call})" if generator else f"return {call}"
    source = f"def make({target}):\n    def hookimpl({arguments}):\n        {body}\n"
    source += "    return hookimpl\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    maker: Callable[[Any], Any] = namespace["make"]
    return maker


# -- what an answer must be ------------------------------------------------------------------


class Answer(list[Any]):
    """What one plugin's registration hook returned, checked, and the plugin that gave it."""

    def __init__(self, plugin: str, items: Iterable[Any]) -> None:
        super().__init__(items)
        self.plugin = plugin

    @classmethod
    def checked(cls, plugin: str, hook: str, result: Any, args: object = None) -> Answer | None:
        """`result` as an `Answer`, or `PluginError` saying what is wrong with it."""
        if hook == "opus_register_commands" or result is None:
            return None
        if hook == "opus_plugin_options":
            if isinstance(result, type):
                return cls(plugin, [result])
            raise PluginError(f"returned {result!r}; return the class of the options, or None")
        if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
            raise PluginError(f"returned {result!r}; return a list")
        items = list(result)
        if hook == "opus_register_processors":
            from opus_core.processor import TaskProcessor

            for item in items:
                is_class = isinstance(item, type) and issubclass(item, TaskProcessor)
                if not (is_class or isinstance(item, TaskProcessor)):
                    raise PluginError(f"returned {item!r}, which is not a TaskProcessor")
            return cls(plugin, items)
        kind = next(k for k in kinds() if k.hook == hook)
        for item in items:
            if not (isinstance(item, type) and issubclass(item, kind.base)):
                raise PluginError(
                    f"returned {item!r}, which is not a {kind.base.__name__} subclass"
                )
            name = getattr(item, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"{item.__name__} has no `name`; set the class attribute")
        return cls(plugin, items)


def _tasks(plugin: str, hook: str, found: Any, args: Mapping[str, Any]) -> list[Any]:
    """An `opus_load_tasks` answer as a list of `Task`, or `PluginError` naming the plugin."""
    from opus_core.manifest import Task

    where = f" for {args['path']}" if "path" in args else ""
    if isinstance(found, (str, bytes, Mapping)) or not isinstance(found, Iterable):
        raise PluginError(
            f"plugin {plugin!r}: {hook} returned {type(found).__name__}{where}; "
            "return a list of Task, or None for a file the plugin does not read"
        )
    try:
        tasks = list(found)  # a generator runs here
    except (OpusError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise PluginError(f"plugin {plugin!r} failed in {hook}{where}: {one_line(exc)}") from exc
    for task in tasks:
        if not isinstance(task, Task):
            raise PluginError(f"plugin {plugin!r}: {hook} returned {task!r}{where}, not a Task")
    return tasks


def _values(plugin: str, hook: str, found: Any, args: Mapping[str, Any]) -> Any:
    """An `opus_task_restore` answer, a mapping, or `PluginError` naming the plugin."""
    if not isinstance(found, Mapping):
        task = args.get("task")
        which = f" for task {task.task_id!r}" if task is not None else ""
        raise PluginError(
            f"plugin {plugin!r}: {hook} returned {type(found).__name__}{which}; "
            "return a dict of values, or None to run the task"
        )
    return found


CHECKS: dict[str, Callable[[str, str, Any, Mapping[str, Any]], Any]] = {
    **{hook: Answer.checked for hook in REGISTRATION_HOOKS},
    "opus_load_tasks": _tasks,
    "opus_task_restore": _values,
}
"""What an implementation's answer is checked and turned into, by hook."""
