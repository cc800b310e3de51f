"""The manifest files the core reads: `.toml` (a file of `[[tasks]]`) and `.json`, and
`manifests`, which makes `Task`s from a list of manifest tables (as `opus.toml`'s
`[[tasks]]` holds them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opus_core.manifest import Task


def load_manifest_file(path: Path) -> list[Task] | None:
    """The tasks of a `.toml` (a file of `[[tasks]]`) or `.json` (a list of manifests, or
    one) manifest file; None for a file of another kind."""
    import json

    from opus_core.config import read_toml
    from opus_core.errors import ManifestError

    if path.suffix == ".toml":
        data = read_toml(path)
        unknown = sorted(set(data) - {"tasks"})
        if unknown:
            raise ManifestError(f"{path}: unknown section [{unknown[0]}]; expected [[tasks]]")
        entries = data.get("tasks", [])
    elif path.suffix == ".json":
        try:
            entries = json.loads(path.read_bytes(), parse_constant=_no_constant)
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        except ValueError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        if isinstance(entries, Mapping):
            entries = [entries]
    else:
        return None
    return manifests(entries, str(path))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON (or a task record) can hold")


def manifests(entries: object, where: str) -> list[Task]:
    """`Task`s from a list of `{kind, version, metadata, spec}` tables; errors name `where`."""
    from opus_core.errors import ManifestError
    from opus_core.manifest import TASK_KEYS, Task

    if not isinstance(entries, list) or not all(
        type(e) is dict or isinstance(e, Mapping) for e in entries
    ):
        raise ManifestError(f"{where}: expected a list of task manifests (tables)")
    tasks = []
    known = frozenset(TASK_KEYS)
    for index, entry in enumerate(entries):
        if not entry.keys() <= known:
            unknown = sorted(set(entry) - known)
            raise ManifestError(
                f"{where}: tasks[{index}]: unknown key {unknown[0]!r}; "
                f"expected {', '.join(TASK_KEYS)}"
            )
        try:
            tasks.append(
                Task(
                    kind=entry.get("kind"),
                    version=entry.get("version"),
                    spec=entry.get("spec"),
                    metadata=entry.get("metadata"),
                )
            )
        except ManifestError as exc:
            raise ManifestError(f"{where}: tasks[{index}]: {exc}") from None
    return tasks
