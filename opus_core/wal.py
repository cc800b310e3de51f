"""Putting an SQLite database in WAL mode when several processes may open it at once: the
state database of the `sqlite` persistence and the machine's resource leases.

SQLite's busy handler does not wait on a change of journal mode: two processes that open
a new database at the same instant and both switch it to WAL can see "database is locked"
at once, whatever their busy timeout. `use_wal` leaves a database that is already in WAL
mode as it is (the mode is kept in the file), and otherwise makes the switch holding an
exclusive lock (`flock`) on a file beside the database, `NAME.lock`, so processes make it
one after the other.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

__all__ = ["use_wal"]


def use_wal(connection: sqlite3.Connection, path: Path) -> str:
    """Switch the database at `path`, open on `connection`, to WAL mode, and return the
    journal mode it is in afterwards ("wal" unless SQLite refused the switch)."""
    mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode == "wal":
        return mode
    lock = os.open(
        path.with_name(path.name + ".lock"),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    finally:
        os.close(lock)  # and the lock with it
