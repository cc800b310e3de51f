"""Capacities shared by every `opus` process of a project on this machine
(`[opus] resources_scope = "machine"`): leases in an SQLite file beside the state.

Each process takes a lease on what a task needs before the task starts, and gives it
back when the task's attempt ends; a lease is one row of `resources.db` in the project's
state folder, taken in one write transaction (`BEGIN IMMEDIATE`), so two processes never
both see room that only one of them fits in. A lease names the process that holds it
(its pid and the time the kernel started it, so a reused pid is not taken for it): a
process that dies — killed with SIGKILL included — holds nothing from then on, as the
next process to ask for a resource removes the leases of processes that are gone. A
process waiting for a resource asks again every 0.2 seconds (`SIGNAL_CHECK`), so a dead
holder's leases are freed within 0.2 seconds of its death while another waits for them.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opus_core.errors import OpusError
from opus_core.resources import EPSILON
from opus_core.wal import use_wal

if TYPE_CHECKING:
    import sqlite3

    from opus_core.resources import Needs

FILENAME = "resources.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    id TEXT NOT NULL,
    resource TEXT NOT NULL,
    amount REAL NOT NULL,
    pid INTEGER NOT NULL,
    started INTEGER NOT NULL
)
"""


def process_started(pid: int) -> int | None:
    """When the kernel started process `pid` (clock ticks since boot), or None when there
    is no such process, or it is a zombie (it died; its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class MachineLeases:
    """The leases of one project's machine-wide resources (see the module)."""

    def __init__(self, folder: Path, capacities: Mapping[str, float]) -> None:
        self.path = folder / FILENAME
        self.capacities = dict(capacities)
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        if self._connection is None or self._pid != os.getpid():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            use_wal(connection, self.path)
            connection.execute(_SCHEMA)
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def take(self, needs: Needs) -> str | None:
        """A lease on `needs` if they are free on the machine now, else None."""
        import sqlite3

        me = (os.getpid(), process_started(os.getpid()) or 0)
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    held = self._held(connection, me)
                    if any(
                        held.get(name, 0.0) + need > self.capacities[name] + EPSILON
                        for name, need in needs
                    ):
                        return None
                    lease = uuid.uuid4().hex
                    connection.executemany(
                        "INSERT INTO leases VALUES (?, ?, ?, ?, ?)",
                        [(lease, name, need, *me) for name, need in needs],
                    )
                    return lease
                finally:
                    connection.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise OpusError(
                    f"resource leases {self.path}: cannot take a lease: {exc}"
                ) from None

    def give(self, lease: str) -> None:
        """Give `lease` back."""
        import sqlite3

        with self._lock:
            try:
                self._connect().execute("DELETE FROM leases WHERE id = ?", (lease,))
            except sqlite3.Error as exc:
                raise OpusError(
                    f"resource leases {self.path}: cannot give a lease back: {exc}"
                ) from None

    def _held(self, connection: sqlite3.Connection, me: tuple[int, int]) -> dict[str, float]:
        """What live processes hold, by resource, once the leases of dead ones are gone."""
        holders: list[Any] = connection.execute(
            "SELECT DISTINCT pid, started FROM leases"
        ).fetchall()
        dead = [
            (pid, started)
            for pid, started in holders
            if (pid, started) != me and process_started(pid) != started
        ]
        if dead:
            connection.executemany("DELETE FROM leases WHERE pid = ? AND started = ?", dead)
        rows = connection.execute(
            "SELECT resource, SUM(amount) FROM leases GROUP BY resource"
        ).fetchall()
        return {name: float(total) for name, total in rows}

    def held(self) -> dict[str, float]:
        """What live processes hold now, by resource (for `opus` and tests to show)."""
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                return self._held(connection, (os.getpid(), process_started(os.getpid()) or 0))
            finally:
                connection.execute("COMMIT")
