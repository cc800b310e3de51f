"""`TaskProcessor`: the code that handles every task of one kind."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError
from opus_core.logger import LoggerWrapper

if TYPE_CHECKING:
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.store import KeyValueStore

DEFAULT_COMMANDS = ("apply", "get", "delete", "describe")

PROCESS_TASK_PARAMETERS = ("task", "command", "context", "key_value_store", "state_persistence")
"""The keyword arguments every call of `process_task` passes, in this order."""

SEED_NAMES = {"kind_versions": "versions", "supported_commands": "commands"}
"""The seed's names of the class attributes, and the names they stand for."""


class TaskProcessor:
    """Handles tasks of one `kind` for the `versions` and `commands` it lists.

    Subclass it, set the class attributes and implement `process_task`::

        class Deploy(TaskProcessor):
            kind = "Deploy"
            versions = ("v1", "v2")          # default ("v1",)
            commands = ("apply", "delete")   # default ("apply", "get", "delete", "describe")

            def process_task(self, task, command, context, key_value_store, state_persistence):
                ...
                return {"url": "https://..."}   # published for dependent tasks

    `process_task` is called with keyword arguments, so its parameters must
    keep these names (or take `**kwargs`); registering a processor whose
    parameters do not match is an `OpusError` naming the one at fault.

    The seed's form `TaskProcessor(kind=..., kind_versions=[...],
    supported_commands=[...], logger=...)` works too, and so do `kind_versions`
    and `supported_commands` as class attributes: they set `versions` and
    `commands`.
    """

    kind: ClassVar[str] = ""
    versions: ClassVar[tuple[str, ...]] = ("v1",)
    commands: ClassVar[tuple[str, ...]] = DEFAULT_COMMANDS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take the seed's class attributes `kind_versions` and `supported_commands` as
        `versions` and `commands` (each refused when its class also sets the new name)."""
        super().__init_subclass__(**kwargs)
        for seed, name in SEED_NAMES.items():
            if seed not in cls.__dict__ or isinstance(cls.__dict__[seed], property):
                continue
            if name in cls.__dict__:
                raise OpusError(
                    f"{cls.__name__} sets both {name} and {seed} (the seed's name for "
                    f"{name}): keep {name} only"
                )
            value = cls.__dict__[seed]
            delattr(cls, seed)  # the property below answers for it again
            setattr(cls, name, _names(cls.__name__, seed, value))

    def __init__(
        self,
        kind: str | None = None,
        kind_versions: Iterable[str] | None = None,
        supported_commands: Iterable[str] | None = None,
        logger: LoggerWrapper | None = None,
    ) -> None:
        if kind is not None:
            self.kind = kind  # type: ignore[misc]
        if kind_versions is not None:
            self.kind_versions = kind_versions
        if supported_commands is not None:
            self.supported_commands = supported_commands
        if not isinstance(self.kind, str) or not self.kind:
            raise OpusError(
                f"{type(self).__name__} has no kind: set the class attribute `kind` "
                "or pass kind=... to TaskProcessor.__init__"
            )
        _check_names(self)
        self.logger = logger if logger is not None else LoggerWrapper()

    @property
    def kind_versions(self) -> tuple[str, ...]:
        """The seed's name for `versions`."""
        return self.versions

    @kind_versions.setter
    def kind_versions(self, value: Iterable[str]) -> None:
        self.versions = _names(type(self).__name__, "versions", value)  # type: ignore[misc]

    @property
    def supported_commands(self) -> tuple[str, ...]:
        """The seed's name for `commands`."""
        return self.commands

    @supported_commands.setter
    def supported_commands(self, value: Iterable[str]) -> None:
        self.commands = _names(type(self).__name__, "commands", value)  # type: ignore[misc]

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> KeyValueStore | Mapping[str, Any] | None:
        """Carry out `command` for `task` in `context`.

        `key_value_store` holds the values visible to this task: the store as it
        stood when the run started plus what the tasks it depends on published.
        Return a dict or `KeyValueStore`: every key that is new or changed
        compared to what the task was given is published to its dependents.
        Returning None publishes what was saved into `key_value_store`.
        Raise to fail the task.
        """
        raise NotImplementedError(f"{type(self).__name__}.process_task is not implemented")


_WHAT = {
    "versions": "version strings",
    "commands": "command names",
    "kind_versions": "version strings",
    "supported_commands": "command names",
}


def _names(owner: str, attribute: str, value: object) -> tuple[str, ...]:
    """`value` as the `versions` or `commands` of the class named `owner`: a non-empty list of
    non-empty strings (`attribute` is the name it was given under).

    A string is refused rather than split into its characters.
    """
    if (
        isinstance(value, (str, bytes, Mapping))
        or not isinstance(value, Iterable)
        or not (names := tuple(value))
        or not all(isinstance(name, str) and name for name in names)
    ):
        raise OpusError(f"{owner}.{attribute} must be a list of {_WHAT[attribute]}, got {value!r}")
    return names


def _check_names(processor: TaskProcessor) -> None:
    """Check `processor`'s `versions` and `commands`, keeping a valid list as a tuple."""
    for attribute in ("versions", "commands"):
        value = getattr(processor, attribute)
        if (
            type(value) is not tuple
            or not value
            or not all(isinstance(name, str) and name for name in value)
        ):
            names = _names(type(processor).__name__, attribute, value)  # raises if it cannot
            setattr(processor, attribute, names)


def check_processor(processor: TaskProcessor) -> None:
    """Check what registering `processor` relies on: its `versions` and `commands`, and that
    `process_task` takes the keyword arguments it is called with (an `OpusError` naming the
    class, and the parameter at fault)."""
    _check_names(processor)
    problem = signature_problem(processor.process_task)
    if problem:
        owner = type(processor)
        raise OpusError(
            f"{owner.__module__}.{owner.__qualname__}.process_task: {problem}; opus calls it "
            f"with keyword arguments {', '.join(PROCESS_TASK_PARAMETERS)}"
        )


def signature_problem(process_task: Callable[..., object]) -> str | None:
    """What keeps `process_task` (a bound method) from taking the keyword arguments
    `PROCESS_TASK_PARAMETERS`, in a few words; None when nothing does (or its signature
    cannot be read). Extra parameters with defaults and `**kwargs` are fine."""
    try:
        parameters = list(inspect.signature(process_task).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    takes_any = any(p.kind is kinds.VAR_KEYWORD for p in parameters)
    named = {
        p.name: p for p in parameters if p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
    }
    for parameter in named.values():
        if parameter.name in PROCESS_TASK_PARAMETERS and parameter.kind is kinds.POSITIONAL_ONLY:
            return f"parameter {parameter.name!r} is positional-only (drop the '/' before it)"
    unexpected = [
        p.name
        for p in named.values()
        if p.name not in PROCESS_TASK_PARAMETERS and p.default is inspect.Parameter.empty
    ]
    missing = [] if takes_any else [n for n in PROCESS_TASK_PARAMETERS if n not in named]
    return _mismatch(unexpected, missing)


def _mismatch(unexpected: list[str], missing: list[str]) -> str | None:
    """What to tell the author of `process_task` about parameters opus never passes
    (`unexpected`) and the ones it passes that are not there (`missing`)."""
    if unexpected and missing:
        pairs = zip(unexpected, missing, strict=False)
        renames = ", ".join(f"{old!r} to {new!r}" for old, new in pairs)
        return f"parameter {unexpected[0]!r} does not match: rename {renames}"
    if unexpected:
        return f"parameter {unexpected[0]!r} is never passed: give it a default, or remove it"
    if missing:
        names = ", ".join(repr(name) for name in missing)
        some = "parameters" if len(missing) > 1 else "parameter"
        return f"no {some} {names}: add {'them' if len(missing) > 1 else 'it'}, or take **kwargs"
    return None
