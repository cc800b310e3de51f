"""The `file` persistence passes the persistence contract."""

from __future__ import annotations

from pathlib import Path

from opus_plugin_file_persistence import FilePersistence

from opus_core.testing import PersistenceContract


class TestFilePersistence(PersistenceContract):
    def make_persistence(self, path: Path) -> FilePersistence:
        return FilePersistence(path)
