"""`TaskProcessor`: the code that handles every task of one kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError
from opus_core.logger import LoggerWrapper

if TYPE_CHECKING:
    from opus_core.manifest import Task
    from opus_core.persistence import StatePersistence
    from opus_core.store import KeyValueStore

DEFAULT_COMMANDS = ("apply", "get", "delete", "describe")


class TaskProcessor:
    """Handles tasks of one `kind` for the `versions` and `commands` it lists.

    Subclass it, set the class attributes and implement `process_task`::

        class Deploy(TaskProcessor):
            kind = "Deploy"
            commands = ("apply", "delete")

            def process_task(self, task, command, context, key_value_store, state_persistence):
                ...
                return {"url": "https://..."}   # published for dependent tasks

    The seed's form `TaskProcessor(kind=..., kind_versions=[...],
    supported_commands=[...], logger=...)` works too.
    """

    kind: ClassVar[str] = ""
    versions: ClassVar[tuple[str, ...]] = ("v1",)
    commands: ClassVar[tuple[str, ...]] = DEFAULT_COMMANDS

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
            self.versions = _names(self, "versions", kind_versions)  # type: ignore[misc]
        if supported_commands is not None:
            self.commands = _names(self, "commands", supported_commands)  # type: ignore[misc]
        if not isinstance(self.kind, str) or not self.kind:
            raise OpusError(
                f"{type(self).__name__} has no kind: set the class attribute `kind` "
                "or pass kind=... to TaskProcessor.__init__"
            )
        check_processor(self)
        self.logger = logger if logger is not None else LoggerWrapper()

    @property
    def kind_versions(self) -> tuple[str, ...]:
        """The seed's name for `versions`."""
        return self.versions

    @property
    def supported_commands(self) -> tuple[str, ...]:
        """The seed's name for `commands`."""
        return self.commands

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


_WHAT = {"versions": "version strings", "commands": "command names"}


def _names(processor: object, attribute: str, value: object) -> tuple[str, ...]:
    """`value` as `processor`'s `versions` or `commands`: a non-empty list of non-empty strings.

    A string is refused rather than split into its characters.
    """
    if (
        isinstance(value, (str, bytes, Mapping))
        or not isinstance(value, Iterable)
        or not (names := tuple(value))
        or not all(isinstance(name, str) and name for name in names)
    ):
        raise OpusError(
            f"{type(processor).__name__}.{attribute} must be a list of {_WHAT[attribute]}, "
            f"got {value!r}"
        )
    return names


def check_processor(processor: TaskProcessor) -> None:
    """Check `processor`'s `versions` and `commands` (an `OpusError` naming its class)."""
    for attribute in ("versions", "commands"):
        value = getattr(processor, attribute)
        if (
            type(value) is not tuple
            or not value
            or not all(isinstance(name, str) and name for name in value)
        ):
            _names(processor, attribute, value)  # raises for what it cannot take
            setattr(processor, attribute, tuple(value))  # a valid list: kept as a tuple
