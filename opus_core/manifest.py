"""The task manifest: `Task` and its parsed, validated `TaskMetadata`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from opus_core.errors import ManifestError, did_you_mean
from opus_core.printable import is_unicode
from opus_core.substitution import needs_substitution
from opus_core.task_numbers import check_needs, check_task_number

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)
"""Canonical JSON of a manifest: what its checksum is taken of."""

_METADATA_KEYS = frozenset(
    {
        "name",
        "labels",
        "annotations",
        "dependencies",
        "contexts",
        "exclude_contexts",
        "commands",
        "exclude_commands",
        "retries",
        "retry_sleep_time",
        "timeout",
        "inputs",
        "outputs",
        "cache",
        "resources",
        "priority",
    }
)


TASK_KEYS = ("kind", "version", "metadata", "spec")
"""The keys of a task manifest."""


@dataclass(frozen=True)
class LabelSelector:
    """A dependency on every in-scope task carrying all of `labels`."""

    labels: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return "{labels = {" + ", ".join(f'{k} = "{v}"' for k, v in self.labels) + "}}"


class _NoEntries(dict):  # type: ignore[type-arg]
    """The one empty, read-only mapping every task without labels or annotations shares.

    A million tasks would otherwise hold two million empty dicts. It pickles as a
    reference to `NO_ENTRIES`, so a task sent to a worker process stays lean there too.
    """

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a task's labels and annotations are read-only")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _read_only

    def __reduce__(self) -> str:
        return "NO_ENTRIES"

    def __hash__(self) -> int:  # type: ignore[override]  # immutable: a dataclass default
        return 0


NO_ENTRIES: Mapping[str, Any] = _NoEntries()
"""The labels and annotations of a task that has none."""


@dataclass(slots=True)
class TaskMetadata:
    """The validated form of a manifest's `metadata` table."""

    name: str | None = None
    labels: Mapping[str, str] = NO_ENTRIES
    annotations: Mapping[str, Any] = NO_ENTRIES
    """Free-form data for processors and plugins; the engine ignores it."""
    dependency_names: tuple[str, ...] = ()
    dependency_selectors: tuple[LabelSelector, ...] = ()
    contexts: frozenset[str] | None = None
    exclude_contexts: frozenset[str] = frozenset()
    commands: frozenset[str] | None = None
    exclude_commands: frozenset[str] = frozenset()
    retries: int = 0
    retry_sleep_time: float = 0.0
    timeout: float | None = None
    inputs: tuple[str, ...] = ()
    """Files the task reads: paths or globs, relative to the project folder."""
    outputs: tuple[str, ...] = ()
    """Files the task makes: paths or globs, relative to the project folder."""
    cache: bool | None = None
    """Whether an up-to-date task is restored instead of run; None: when it has outputs."""
    resources: Mapping[str, float] = NO_ENTRIES
    """What it holds while it runs, by resource (capacities in `[resources]`)."""
    priority: int = 0
    """Higher starts first among ready tasks (`opus_core.resources`)."""

    @property
    def cached(self) -> bool:
        """Whether the task is restored, not run, when it is up to date (`opus_core.caching`):
        `cache`, which defaults to on for a task with outputs."""
        return bool(self.outputs) if self.cache is None else self.cache


_EMPTY_METADATA = TaskMetadata()


def _string_list(where: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: metadata.{key} must be a list of strings, got {value!r}")
    if not value and key in ("contexts", "commands"):
        raise ManifestError(
            f"{where}: metadata.{key} is empty, so the task would never run; "
            f"remove the key to allow every {key[:-1]}"
        )
    return tuple(value)


def _paths(where: str, key: str, value: object) -> tuple[str, ...]:
    """`metadata.inputs` or `metadata.outputs`: paths or globs, each a non-empty string."""
    paths = _string_list(where, key, value)
    for path in paths:
        if not path or "\x00" in path:
            raise ManifestError(
                f"{where}: each of metadata.{key} must be a path or a glob, got {path!r}"
            )
        if "${" in path:
            raise ManifestError(
                f"{where}: metadata.{key} {path!r}: ${{KEY}} is not substituted in inputs "
                "and outputs; name the files (a glob covers files whose names vary)"
            )
    return paths


def _labels(where: str, key: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(
            f"{where}: {key} must be a table of string keys to string values, got {value!r}"
        )
    return dict(value)


def parse_metadata(metadata: Mapping[str, Any], where: str) -> TaskMetadata:
    """Validate a manifest's metadata; `where` names the task in error messages."""
    if isinstance(metadata, dict) and metadata:
        quick = _quick_metadata(metadata)
        if quick is not None:
            return quick
    if not isinstance(metadata, Mapping):
        raise ManifestError(f"{where}: metadata must be a table, got {metadata!r}")
    if not metadata:
        return _EMPTY_METADATA
    unknown = metadata.keys() - _METADATA_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ManifestError(
            f"{where}: unknown metadata key {key!r}{did_you_mean(key, _METADATA_KEYS)}; "
            f"expected one of {', '.join(sorted(_METADATA_KEYS))}"
        )
    fields: dict[str, Any] = {}
    for key, value in metadata.items():
        if value is not None:
            _parse_field(fields, key, value, where)
    return TaskMetadata(**fields)


def _parse_field(fields: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Check one metadata entry (`key` is known) and put what it means into `fields`."""
    if key == "name":
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{where}: metadata.name must be a non-empty string, got {value!r}")
        if not is_unicode(value):  # a lone surrogate: no file, database or log holds it
            raise ManifestError(
                f"{where}: metadata.name {value!r} is not valid Unicode text (a lone "
                "surrogate); give the task a name of characters"
            )
        fields["name"] = value
    elif key == "labels":
        fields["labels"] = _labels(where, "metadata.labels", value)
    elif key == "annotations":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ManifestError(
                f"{where}: metadata.annotations must be a table with string keys, got {value!r}"
            )
        fields["annotations"] = dict(value)
    elif key == "dependencies":
        fields["dependency_names"], fields["dependency_selectors"] = _dependencies(where, value)
    elif key in ("contexts", "commands", "exclude_contexts", "exclude_commands"):
        fields[key] = frozenset(_string_list(where, key, value))
    elif key in ("inputs", "outputs"):
        fields[key] = _paths(where, key, value)
    elif key == "resources":
        try:
            fields[key] = check_needs("metadata.resources", value)
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    elif key == "priority":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{where}: metadata.priority must be a whole number, got {value!r}")
        fields[key] = value
    elif key == "cache":
        if not isinstance(value, bool):
            raise ManifestError(f"{where}: metadata.cache must be true or false, got {value!r}")
        fields[key] = value
    else:  # retries, retry_sleep_time, timeout: checked as @task checks them
        try:
            fields[key] = check_task_number(key, value)
        except ValueError as exc:
            raise ManifestError(f"{where}: metadata.{exc}") from None


def _quick_metadata(metadata: dict[str, Any]) -> TaskMetadata | None:
    """The metadata of the commonest manifests — a name, and dependencies by name — made
    without the general checks; None for anything else (the general path then decides,
    and words any error)."""
    name = metadata.get("name")
    if type(name) is not str or not name or not name.isascii():
        return None
    if len(metadata) == 1:
        return TaskMetadata(name)
    dependencies = metadata.get("dependencies")
    if len(metadata) != 2 or type(dependencies) is not list:
        return None
    for dep in dependencies:
        if type(dep) is not str or not dep:
            return None
    return TaskMetadata(name, NO_ENTRIES, NO_ENTRIES, tuple(dependencies))


def _dependencies(where: str, value: object) -> tuple[tuple[str, ...], tuple[LabelSelector, ...]]:
    if not isinstance(value, (list, tuple)):
        raise ManifestError(f"{where}: metadata.dependencies must be a list, got {value!r}")
    names: list[str] = []
    selectors: list[LabelSelector] = []
    for dep in value:
        if isinstance(dep, str) and dep:
            names.append(dep)
        elif isinstance(dep, Mapping) and set(dep) == {"labels"} and dep["labels"]:
            labels = _labels(where, "a label dependency's labels", dep["labels"])
            selectors.append(LabelSelector(tuple(sorted(labels.items()))))
        else:
            raise ManifestError(
                f"{where}: each dependency must be a task name or "
                f'{{labels = {{key = "value"}}}} with at least one label, got {dep!r}'
            )
    return tuple(names), tuple(selectors)


class Task:
    """A manifest: `kind` and `version` select the processor, `spec` is its input.

    `metadata` holds the task's `name`, `labels`, `dependencies`, scope
    (`contexts`, `commands` and their `exclude_` forms), `retries`,
    `retry_sleep_time` and `timeout`; see the README for each.

    `task_id` is the name when one is given, else the manifest's checksum.
    """

    # Slots, and no spec dict until one is asked for: a run of a million tasks holds a
    # million of these, and each dict or attribute table it does not make is memory saved.
    __slots__ = ("_checksum", "_placeholders", "_spec", "kind", "meta", "metadata", "version")

    def __init__(
        self,
        kind: str,
        version: str,
        spec: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        logger: object = None,  # accepted for compatibility with the seed; unused
    ) -> None:
        if type(kind) is not str or not kind:
            if not isinstance(kind, str) or not kind:
                raise ManifestError(f"a task needs a non-empty string kind, got {kind!r}")
        if type(version) is not str or not version:
            if not isinstance(version, str) or not version:
                raise ManifestError(
                    f"task of kind {kind!r}: version must be a non-empty string, got {version!r}"
                )
        if spec is not None and not isinstance(spec, Mapping):
            raise ManifestError(f"task of kind {kind!r}: spec must be a table, got {spec!r}")
        self.kind = kind
        self.version = version
        self._spec: dict[str, Any] | None = dict(spec) if spec else None
        self.metadata: dict[str, Any] = dict(metadata) if metadata else {}
        meta = _quick_metadata(self.metadata) if self.metadata else None
        if meta is None:
            name = self.metadata.get("name")
            if isinstance(name, str) and name:
                where = f"task {name!r}"
            else:
                where = f"task of kind {kind!r}"
            meta = parse_metadata(self.metadata, where)
        self.meta: TaskMetadata = meta
        self._checksum: str | None = None
        self._placeholders: bool | None = None if self._spec else False

    @property
    def spec(self) -> dict[str, Any]:
        """The processor's input (a dict, empty when the manifest has none)."""
        spec = self._spec
        if spec is None:
            spec = self._spec = {}
            self._placeholders = None  # the caller may fill it
        return spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        self._spec = value
        self._placeholders = None

    @property
    def checksum(self) -> str:
        """The sha256 of the manifest (kind, version, metadata, spec) as canonical JSON."""
        if self._checksum is None:
            manifest = {
                "kind": self.kind,
                "version": self.version,
                "metadata": self.metadata,
                "spec": self._spec or {},
            }
            text = _CANONICAL.encode(manifest)
            self._checksum = hashlib.sha256(text.encode()).hexdigest()
        return self._checksum

    @property
    def has_placeholders(self) -> bool:
        """Whether the spec has strings that `${KEY}` substitution may rewrite."""
        if self._placeholders is None:
            self._placeholders = bool(self._spec) and needs_substitution(self._spec)
        return self._placeholders

    @property
    def task_id(self) -> str:
        """The task's name, or its checksum when it has none."""
        return self.meta.name or self.checksum

    @property
    def name(self) -> str | None:
        """The task's name from `metadata.name`, if any."""
        return self.meta.name

    def with_spec(self, spec: dict[str, Any]) -> Task:
        """A copy of this task with another spec, keeping the original checksum."""
        clone = object.__new__(Task)
        clone.kind = self.kind
        clone.version = self.version
        clone.metadata = self.metadata
        clone.meta = self.meta
        clone._checksum = self.checksum
        clone._spec = spec
        clone._placeholders = None
        return clone

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain data, as it would appear in `[[tasks]]`."""
        data: dict[str, Any] = {"kind": self.kind, "version": self.version}
        if self.metadata:
            data["metadata"] = self.metadata
        if self._spec:
            data["spec"] = self._spec
        return data

    def __repr__(self) -> str:
        return f"Task(kind={self.kind!r}, version={self.version!r}, task_id={self.task_id!r})"


def display_name(task: Task) -> str:
    """How messages name a task: its name, or its kind and a short checksum."""
    return task.meta.name or f"{task.kind}@{task.checksum[:12]}"
