"""One typed registry per kind of thing plugins provide: runners, persistence, loggers.

`PluginInfo` is what opus knows of one plugin: where it comes from, its status,
what it provides and which hooks it implements (`opus plugins list`).

A `Kind` says everything opus knows about one kind: the base class, the hook
that provides it, where `opus.toml` chooses one and configures it, the default,
and which of the project's distributions provides a name it lacks. A
`Registry` is what the plugins provided of that kind: name to class, and the
plugin that provided each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


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

    def provide(self, cls: type, plugin: str, plugins: Mapping[str, PluginInfo]) -> str | None:
        """Add `cls`, provided by `plugin`, under its `name`; if another plugin provides that
        name too, the conflict, which is returned and raised whenever the name is asked for."""
        name: str = getattr(cls, "name")  # noqa: B009  (checked by the registration hook)
        first = self.providers.get(name)
        if first is None or first == plugin:
            self.classes[name], self.providers[name] = cls, plugin
            return None
        self.conflicts[name] = (
            f"{self.kind.singular} {name!r} is provided by both {plugins[first].describe()} and "
            f"{plugins[plugin].describe()}; uninstall one, or list one in [opus] disable_plugins"
        )
        return self.conflicts[name]


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
    failure: str = "is broken"
    """How messages introduce `error`: "failed to load" or "is broken"."""
    dist: Any = None
    """The `importlib.metadata.Distribution`, read for name and version only when shown."""

    def read_dist(self) -> None:
        """Fill `distribution` and `version` from the distribution's metadata (once)."""
        if self.dist is not None:
            metadata = self.dist.metadata  # parsed on each access: once here
            self.distribution, self.version = metadata["Name"], metadata["Version"]
            self.dist = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of `opus plugins list --json`."""
        self.read_dist()
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
        self.read_dist()
        if not self.distribution:
            return f"plugin {self.name!r}"
        return f"plugin {self.name!r} ({self.distribution} {self.version or '?'})"


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
