"""Reading a YAML manifest file with PyYAML's safe loader, keeping lines for error messages.

Documents are composed into nodes first (nodes carry their line), checked,
and only then constructed into Python values with a subclass of
`yaml.SafeLoader` — what `yaml.safe_load_all` does, with the marks kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from opus_core import ManifestError, Task

KEYS = ("kind", "version", "metadata", "spec")
"""The top-level keys of a manifest."""

MAX_VALUES = 100_000
"""How many values aliases (`*name`) may expand one file to."""

_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A value that JSON and TOML manifests cannot hold, at `node`."""

    def __init__(self, message: str, node: Node) -> None:
        super().__init__(message)
        self.node = node


class _Loader(yaml.SafeLoader):
    """The safe loader, except: a date stays the text written; !!set and !!binary are refused."""

    def construct_text(self, node: Node) -> Any:
        return self.construct_scalar(node)

    def refuse_set(self, node: Node) -> Any:
        raise _Refused("!!set is not supported in a manifest; write a list", node)

    def refuse_binary(self, node: Node) -> Any:
        raise _Refused("!!binary is not supported in a manifest; write a base64 string", node)


_Loader.add_constructor(_TIMESTAMP, _Loader.construct_text)
_Loader.add_constructor("tag:yaml.org,2002:set", _Loader.refuse_set)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.refuse_binary)


def load_tasks(path: Path) -> list[Task]:
    """One `Task` per non-empty document of the YAML file at `path`."""
    text = _read(path)
    try:
        return _load(path, text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        column = f" (column {mark.column + 1})" if mark else ""
        problem = (error.problem or error.context or "unreadable").replace("\n", " ")
        raise ManifestError(f"{where}: invalid YAML: {problem}{column}") from None
    except ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        character = ord(error.character) if isinstance(error.character, str) else error.character
        raise ManifestError(
            f"{path}:{line}: invalid YAML: character #x{character:04x} is not allowed"
        ) from None
    except _Refused as error:
        raise ManifestError(f"{_at(path, error.node)}: {error}") from None


def _load(path: Path, text: str) -> list[Task]:
    loader = _Loader(text)
    tasks: list[Task] = []
    expanded = written = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            more_expanded, more_written = _check(path, node)
            expanded, written = expanded + more_expanded, written + more_written
            if expanded > MAX_VALUES and expanded > written:
                raise ManifestError(
                    f"{_at(path, node)}: aliases expand this file to {expanded} values, "
                    f"more than the {MAX_VALUES} allowed"
                )
            data = _copy(loader.construct_document(node))
            if data is not None:
                tasks.append(_task(path, node, data))
    except RecursionError:
        line = loader.get_mark().line + 1
        raise ManifestError(f"{path}:{line}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return tasks


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ManifestError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x})"
        ) from None


def _at(path: Path, node: Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _check(path: Path, root: Node) -> tuple[int, int]:
    """Refuse non-string or duplicate keys and recursive aliases; count values.

    Returns how many values the document holds once its aliases are expanded,
    and how many were written. Aliases make nodes shared; counting each node
    once (with memoised sizes) keeps this linear in what was written, however
    much the aliases would expand.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ManifestError(f"{_at(path, node)}: a recursive alias (a value containing itself)")
        open_nodes.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if key_node.tag != _MERGE:
                    _check_key(path, key_node, seen)
                total += size(value_node)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root), len(sizes)


def _check_key(path: Path, node: Node, seen: set[str]) -> None:
    if not isinstance(node, ScalarNode):
        raise ManifestError(f"{_at(path, node)}: keys must be strings, not a {node.id}")
    if node.tag not in (_STR, _TIMESTAMP):
        raise ManifestError(
            f"{_at(path, node)}: keys must be strings, and {node.value!r} is read as "
            f"{node.tag.rsplit(':', 1)[-1]}; quote it"
        )
    if node.value in seen:
        raise ManifestError(f"{_at(path, node)}: duplicate key {node.value!r}")
    seen.add(node.value)


def _copy(value: Any) -> Any:
    """`value` with every aliased dict and list its own copy, as if written out."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _task(path: Path, node: Node, data: Any) -> Task:
    where = _at(path, node)
    if not isinstance(data, dict):
        raise ManifestError(
            f"{where}: a manifest must be a mapping of {', '.join(KEYS)}, "
            f"not a {type(data).__name__}"
        )
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, ScalarNode)}
    for key in data:
        if key not in KEYS:
            line = lines.get(key, node.start_mark.line + 1)
            raise ManifestError(
                f"{path}:{line}: unknown key {key!r}; a manifest has {', '.join(KEYS)}"
            )
    for key in ("kind", "version"):
        if key not in data:
            raise ManifestError(f"{where}: the manifest has no {key!r}")
    try:
        return Task(
            kind=data["kind"],
            version=data["version"],
            spec=data.get("spec"),
            metadata=data.get("metadata"),
        )
    except ManifestError as error:
        raise ManifestError(f"{where}: {error}") from None
