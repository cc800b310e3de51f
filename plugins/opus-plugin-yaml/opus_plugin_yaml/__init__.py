"""opus-plugin-yaml: tasks from the `.yaml`/`.yml` files listed in `[opus] manifests`.

Each YAML document of a file is one manifest, Kubernetes style::

    kind: Deploy
    version: v1
    metadata:
      name: web
      dependencies: [database]
    spec:
      image: web:1.2

PyYAML is imported only when a YAML file is read, so `opus --help` stays fast.
See the README for what is accepted and refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opus_core.plugin import hookimpl

if TYPE_CHECKING:
    from opus_core import Task

__all__ = ["OPUS_MANIFEST_SUFFIXES", "SUFFIXES", "opus_load_tasks"]

SUFFIXES = (".yaml", ".yml")
"""The file suffixes this plugin reads (in any case)."""

OPUS_MANIFEST_SUFFIXES = SUFFIXES
"""What `opus plugins list` shows this plugin provides: `manifests: .yaml, .yml`."""


@hookimpl
def opus_load_tasks(path: Path) -> list[Task] | None:
    """The tasks of the YAML file at `path`, one per document; None for other files.

    Raises `opus_core.ManifestError` with a one-line message starting
    `"{path}:{line}: "` when the file cannot be read or a document is not a
    valid manifest.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        return None
    from opus_plugin_yaml._loader import load_tasks  # PyYAML: only when a YAML file is read

    return load_tasks(path)
