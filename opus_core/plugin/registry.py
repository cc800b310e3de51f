"""One typed registry per kind of thing plugins provide: runners, persistence, loggers.

A `Kind` says everything opus knows about one kind: the base class, the hook
that provides it, where `opus.toml` chooses one and configures it, the default,
and which of the project's distributions provides a name it lacks. A
`Registry` is what the plugins provided of that kind: name to class, and the
plugin that provided each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of provided thing (see `RUNNERS`, `PERSISTENCE`, `LOGGERS`)."""

    singular: str
    """How messages name one: "runner"."""
    section: str
    """The `opus.toml` table of options, `[<section>.<name>]`, and the plural: "runners"."""
    base: type
    default: str
    """The name used when `[opus] <singular>` is not set."""
    known: Mapping[str, str] = field(default_factory=dict)
    """Names the project's own distributions provide, for `pip install` hints."""

    @property
    def hook(self) -> str:
        """The registration hook: `opus_register_<section>`."""
        return f"opus_register_{self.section}"

    @property
    def key(self) -> str:
        """The `[opus]` key that chooses one: `opus.runner`."""
        return f"opus.{self.singular}"


class Registry(Mapping[str, type]):
    """What plugins provide of one kind: name to class, and the plugin behind each name.

    A name two plugins provide is in `conflicts`; asking for it raises `PluginError`
    naming both.
    """

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.classes: dict[str, type] = {}
        self.providers: dict[str, str] = {}
        self.conflicts: dict[str, str] = {}

    def __getitem__(self, name: str) -> type:
        if name in self.conflicts:
            from opus_core.errors import PluginError

            raise PluginError(self.conflicts[name])
        return self.classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.classes or name in self.conflicts

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def names(self) -> list[str]:
        """Every name, sorted."""
        return sorted(self.classes)


def _kinds() -> tuple[Kind, ...]:
    # Imported here: the registry module is read at start-up, the base classes only when used.
    from opus_core.logger import LoggerWrapper
    from opus_core.persistence import StatePersistence
    from opus_core.runners.base import Runner

    runners = Kind(
        "runner",
        "runners",
        Runner,
        "sequential",
        {"threadpool": "opus-plugin-threadpool", "dask": "opus-plugin-dask"},
    )
    persistence = Kind(
        "persistence",
        "persistence",
        StatePersistence,
        "sqlite",  # what opus run and Tasks.from_config use; Tasks() keeps "memory"
        {"file": "opus-plugin-file-persistence"},
    )
    loggers = Kind(
        "logger", "loggers", LoggerWrapper, "plain", {"colorlog": "opus-plugin-colorlog"}
    )
    return runners, persistence, loggers


SECTIONS = ("runners", "persistence", "loggers")
"""The sections of `opus.toml` that configure provided classes, one per kind."""


def kinds() -> tuple[Kind, ...]:
    """The three kinds, runners first."""
    global _KINDS
    if _KINDS is None:
        _KINDS = _kinds()
    return _KINDS


def kind(section: str) -> Kind:
    """The kind configured in `[<section>.*]`: "runners", "persistence" or "loggers"."""
    for found in kinds():
        if found.section == section:
            return found
    raise KeyError(section)


_KINDS: tuple[Kind, ...] | None = None
