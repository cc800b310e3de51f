"""Finding the `opus` entry points without importing `importlib.metadata`.

`importlib.metadata` costs more to import than everything else `opus plugins
list` does; this reads the same files — `*.dist-info/entry_points.txt` (and
`*.egg-info`) in each directory on `sys.path`, the first distribution of a
name winning as with `importlib.metadata` — and imports nothing to do it.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_INFO_DIR = re.compile(r"^(?P<name>[^-]+)(?:-[^-]*)?\.(dist-info|egg-info)$")


@dataclass(frozen=True)
class EntryPoint:
    """One `name = module[:attribute]` of an entry-point group, with its distribution."""

    name: str
    value: str
    distribution: str
    version: str | None

    def load(self) -> Any:
        """Import the module and return it, or the attribute it names."""
        module_name, _, attribute = self.value.partition(":")
        module = importlib.import_module(module_name.strip())
        for part in attribute.strip().split(".") if attribute.strip() else ():
            module = getattr(module, part)
        return module


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(info: str) -> tuple[str | None, str | None]:
    """Name and Version from the headers of METADATA (or PKG-INFO)."""
    name = version = None
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info, filename), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        break
                    if line.startswith("Name:"):
                        name = line[5:].strip()
                    elif line.startswith("Version:"):
                        version = line[8:].strip()
            return name, version
        except OSError:
            continue
    return name, version


def _group(path: str, group: str) -> list[tuple[str, str]]:
    """The `name = value` lines of `[group]` in an entry_points.txt."""
    found: list[tuple[str, str]] = []
    inside = False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("["):
                    inside = line == f"[{group}]"
                elif inside and "=" in line:
                    name, _, value = line.partition("=")
                    found.append((name.strip(), value.strip()))
    except OSError:
        pass
    return found


def entry_points(group: str) -> Iterator[EntryPoint]:
    """Every entry point of `group` from the distributions on `sys.path`."""
    seen: set[str] = set()
    for directory in sys.path:
        try:
            names = sorted(os.listdir(directory or "."))
        except OSError:
            continue
        for filename in names:
            match = _INFO_DIR.match(filename)
            if match is None:
                continue
            key = _normalize(match.group("name"))
            if key in seen:
                continue
            seen.add(key)
            info = os.path.join(directory or ".", filename)
            points = _group(os.path.join(info, "entry_points.txt"), group)
            if not points:
                continue
            name, version = _metadata(info)
            for point_name, value in points:
                yield EntryPoint(point_name, value, name or match.group("name"), version)
