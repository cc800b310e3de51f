"""The `sqlite` persistence: state, task records and run history in one SQLite database.

Guarantees:

* **Durable.** Every save is its own committed transaction before it
  returns. The database is in WAL mode with `synchronous = NORMAL` (the
  default): a committed save survives the process being killed (`kill -9`)
  at any instant, and the database is never torn; a power cut may lose the
  last saves since the previous checkpoint, never consistency.
  `synchronous = "full"` also syncs every commit to the disk, for power cuts.
* **Several processes at once.** Writes take the write lock up front (`BEGIN
  IMMEDIATE`, or one statement on its own) and a process that finds the
  database locked waits for it (`busy_timeout`, 30 s by default) instead of
  failing; readers never wait for writers (WAL).
* **Its own file only.** One database, `state.db` in the project's state
  folder (`opus_core.persistence.state_folder`) unless `path` says otherwise;
  SQLite adds `state.db-wal` and `state.db-shm` beside it. A folder it creates
  has mode 0700 and the database mode 0600. Reading (`opus state list`,
  `opus runs list`) of a database that does not exist creates nothing.
* **A file that is not opus's (or damaged) is refused, never changed.**
  Anything that is not a regular file, not an SQLite database, another
  program's database, one written by a newer opus, or a symlink to a
  missing file is an `OpusError` naming the file and what to do. Before a
  process first writes to an existing database, `PRAGMA quick_check` reads
  it through (about 20 ms for 10,000 tasks and three runs of them); a
  damaged one is refused, and so is any later "malformed" error. A damaged
  entry (its JSON unreadable) is skipped by listings with a warning naming
  the database and the id.
* **JSON only**, never pickle. Work that runs in a forked process opens its
  own connection (a connection never crosses a fork), and the persistence is
  shipped to other machines (dask) without its connection.

Tables: `state` (id, JSON) holds state and the engine's task records; `runs`
(one row per run, its summary as JSON) and `task_runs` (one row per task of
a run, its fields as columns: `opus_core.persistence.sqlite_rows`) hold the run
history, keyed by run id (which sorts by start) and position
(`opus_core.persistence.sqlite_schema`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError
from opus_core.persistence.base import (
    StatePersistence,
    check_run,
    finite_number,
    run_summary,
    to_json,
)
from opus_core.persistence.folder import state_folder
from opus_core.persistence.sqlite_errors import StateDatabaseError, damaged, database_error
from opus_core.persistence.sqlite_rows import (
    COLUMNS,
    engine_row,
    task_entry,
    task_row,
)
from opus_core.persistence.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION, make_schema
from opus_core.wal import use_wal

if TYPE_CHECKING:
    import sqlite3

    from opus_core.records import PendingRecord

FILENAME = "state.db"
SYNCHRONOUS = ("normal", "full")
KEEP_RUNS = 100
"""How many runs the database keeps by default (`keep_runs`): the newest."""

_TASK_COLUMNS = ", ".join((*COLUMNS, "shape", "more"))
_TASK_MARKS = ", ".join("?" * (len(COLUMNS) + 4))

_CHUNK = 500
"""Identifiers per query of `get_object_states` (SQLite allows 32,766 parameters)."""

LARGEST = 2**63 - 1
"""SQLite's largest integer: a LIMIT or OFFSET past it means "all"."""

_CHECKED: set[str] = set()
"""The databases this process (or the one it was forked from) has checked with
`PRAGMA quick_check`: each is read through once, before its first write."""

_ABANDONED: list[Any] = []
"""Connections inherited across a fork: kept, never closed, so the child's garbage
collector cannot close (and checkpoint) the parent's database from under it."""


def reset_caches() -> None:
    """Forget which databases this process has checked: each is checked again before its
    next first write."""
    _CHECKED.clear()


def default_path() -> Path:
    """`state.db` in the project's state folder (`opus_core.persistence.state_folder`)."""
    return state_folder() / FILENAME


class SqlitePersistence(StatePersistence):
    """State, task records and run history in one SQLite database (`"sqlite"`).

    Options: `path` (default: `state.db` in the project's folder under
    `user_state_dir("opus")`; relative to the opus.toml that sets it),
    `busy_timeout` (seconds a write waits for another process's, default 30),
    `synchronous` ("normal", the default: durable across a killed process;
    "full": across a power cut too, at a sync per save) and `keep_runs` (how
    many runs the history keeps, the newest: default 100; older ones are
    forgotten as a run is saved, so the database does not grow for ever and
    every process's check of it stays quick).
    """

    name: ClassVar[str] = "sqlite"
    supports_concurrent_processes: ClassVar[bool] = True
    lazy_run_tasks: ClassVar[bool] = True

    def __init__(
        self,
        path: Path | None = None,
        busy_timeout: float = 30.0,
        synchronous: str = "normal",
        keep_runs: int = KEEP_RUNS,
    ) -> None:
        super().__init__()
        if synchronous.lower() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be 0 or more seconds, not {busy_timeout!r}")
        if type(keep_runs) is not int or not 1 <= keep_runs <= LARGEST:
            raise ValueError(
                f"keep_runs must be a whole number of runs, at least 1, not {keep_runs!r}"
            )
        self.keep_runs = keep_runs
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout = float(busy_timeout)
        self.synchronous = synchronous.lower()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        self._checked = False  # `_check` passed in this process

    # -- the connection ----------------------------------------------------------------

    def _fail(self, doing: str, exc: BaseException) -> StateDatabaseError:
        """An error naming the database, what was being done, and what to do about it."""
        return database_error(self.path, doing, exc, self.busy_timeout)

    def _damaged(self, reason: str) -> StateDatabaseError:
        return damaged(self.path, reason)

    def _exists(self) -> bool:
        """Whether the database file exists (a read of one that does not creates nothing)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            if self.path.is_symlink():  # dangling: say so, for reads and writes alike
                raise StateDatabaseError(
                    f"state database {self.path} is a symlink to a missing file "
                    f"({os.readlink(self.path)}); opus does not follow symlinks to create its "
                    "database: remove the link, or set [persistence.sqlite] path to the file"
                ) from None
            return False
        except OSError as exc:
            raise self._fail("open it", exc) from None
        if not stat.S_ISREG(info.st_mode):
            raise StateDatabaseError(
                f"state database {self.path} is not a regular file; remove it or choose "
                "another file with [persistence.sqlite] path"
            )
        return True

    def _create(self) -> None:
        """Create the folder (0700) and an empty database file (0600), if missing."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except OSError as exc:
            raise self._fail("create it", exc) from None

    def _open(self, create: bool) -> sqlite3.Connection | None:
        """The connection of this process, opened (and the schema made) on first use."""
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        if self._connection is not None:  # inherited across a fork: never used, never closed
            _ABANDONED.append(self._connection)
            self._connection = None
            self._lock = threading.RLock()
        if not self._exists():
            if not create:
                return None
            self._create()
        import sqlite3

        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # opus says where transactions begin and end
                check_same_thread=False,  # guarded by self._lock
                cached_statements=32,
            )
        except sqlite3.Error as exc:
            raise self._fail("open it", exc) from None
        try:
            self._prepare(connection)
        except BaseException:
            connection.close()
            raise
        self._connection, self._pid = connection, os.getpid()
        return connection

    def _prepare(self, connection: sqlite3.Connection) -> None:
        """Check the database is opus's (or empty), then WAL mode and the schema."""
        import sqlite3

        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # One snapshot for the three: another process creating the schema at this moment
            # must not be seen half done (tables, but not yet its application id).
            connection.execute("BEGIN")
            try:
                application = connection.execute("PRAGMA application_id").fetchone()[0]
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail("read it", exc) from None
        if application != APPLICATION_ID and (tables or application):
            raise StateDatabaseError(
                f"state database {self.path} is not an opus state database (another "
                "program's SQLite file?); opus leaves it alone: choose another file with "
                "[persistence.sqlite] path"
            )
        if version > SCHEMA_VERSION:
            raise StateDatabaseError(
                f"state database {self.path} was written by a newer opus (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade opus or choose another file"
            )
        try:
            mode = use_wal(connection, self.path)
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal mode {mode!r} instead of WAL")
            connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            if version < SCHEMA_VERSION:
                with self._transaction(connection):
                    make_schema(connection)
        except (sqlite3.Error, OSError) as exc:
            raise self._fail("prepare it", exc) from None

    @staticmethod
    @contextlib.contextmanager
    def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: the write lock taken up front, so it never deadlocks."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _check(self, connection: sqlite3.Connection) -> None:
        """Refuse a damaged database before this process first reads or writes it, whatever
        the command: `PRAGMA quick_check` reads every page (O(size), not the slower index
        cross-check of `integrity_check`), once per database and process."""
        import sqlite3

        if self._checked:
            return
        key = os.path.abspath(self.path)
        if key in _CHECKED:
            self._checked = True
            return
        try:
            verdict = connection.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._fail("check it", exc) from None
        if not verdict or verdict[0] != "ok":
            found = " ".join(str(verdict[0]).split()) if verdict else "no answer"
            raise self._damaged(f"quick_check: {found}")
        _CHECKED.add(key)
        self._checked = True

    @contextlib.contextmanager
    def _using(
        self, doing: str, create: bool = False, write: bool = False
    ) -> Iterator[sqlite3.Connection | None]:
        """The connection, under this object's lock; SQLite's errors become clear ones.
        The database is checked (`_check`) before its first use by this process."""
        import sqlite3

        with self._lock:
            connection = self._open(create)
            if connection is not None:
                self._check(connection)
            try:
                yield connection
            except sqlite3.Error as exc:
                raise self._fail(doing, exc) from None
            except OSError as exc:
                raise self._fail(doing, exc) from None

    def close(self) -> None:
        """Close this process's connection (the next use opens it again)."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to other processes (dask): no connection, no lock; they open their own.
        state = dict(self.__dict__)
        state["_connection"] = None
        state["_pid"] = 0
        state["_checked"] = False
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _warn(self, message: str) -> None:
        """One warning line on stderr, once per message for this object."""
        if message not in self._warned:
            self._warned.add(message)
            sys.stderr.write(f"opus: warning: {message}\n")

    def _decode(self, identifier: str, text: object) -> dict[str, Any] | None:
        """The JSON object in `text`, or None (with a warning) when it is damaged."""
        import json

        try:
            data = json.loads(text) if isinstance(text, (str, bytes)) else None
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            self._warn(
                f"state database {self.path}: the entry {identifier!r} is damaged (not a JSON "
                f"object); skipped (`opus state clear {identifier}` removes it)"
            )
            return None
        return data

    # -- state -------------------------------------------------------------------------

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state; damaged entries are skipped with a warning."""
        with self._using("read the state") as connection:
            rows = [] if connection is None else connection.execute("SELECT id, data FROM state")
            return self._decoded(rows)

    def _decoded(self, rows: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
        """The state in `rows` of (id, JSON text), by id; damaged entries left out (warned)."""
        state = {}
        for identifier, text in rows:
            data = self._decode(identifier, text)
            if data is not None:
                state[identifier] = data
        return state

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict; a damaged entry is an error."""
        row = self._one(
            "SELECT data FROM state WHERE id = ?", object_identifier, "read the state of"
        )
        if row is None:
            return {}
        data = self._decode(object_identifier, row[0])
        if data is None:
            raise StateDatabaseError(
                f"state database {self.path}: the entry {object_identifier!r} is damaged; "
                f"`opus state clear {object_identifier}` removes it"
            )
        return data

    def get_object_states(self, object_identifiers: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The state of each of `object_identifiers` that has one, read in one snapshot, a
        few hundred identifiers a query; a damaged entry is left out (with a warning)."""
        wanted = list(dict.fromkeys(object_identifiers))
        rows: list[tuple[str, str]] = []
        with self._using("read the state of many ids") as connection:
            if connection is None:
                return {}
            connection.execute("BEGIN")
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    rows += connection.execute(
                        f"SELECT id, data FROM state WHERE id IN ({marks})", chunk
                    ).fetchall()
            finally:
                connection.execute("COMMIT")
        return self._decoded(rows)

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier`, committed before this returns."""
        self._save_text(object_identifier, to_json(object_identifier, data))

    def _save_text(self, object_identifier: str, text: str) -> None:
        self._one(
            "INSERT OR REPLACE INTO state (id, data) VALUES (?, ?)",
            object_identifier,
            "save the state of",
            text,
            create=True,
        )

    def _one(
        self, statement: str, identifier: str, doing: str, *more: Any, create: bool = False
    ) -> tuple[Any, ...] | None:
        """Run `statement` with `identifier` (and `more`) as one transaction and return its
        first row. On the connection this process has open and checked, straight under
        the lock: a save or a read a task pays for; else through `_using`, which opens
        and checks it first. An error says `doing` `identifier`."""
        import sqlite3

        parameters = (identifier, *more)
        if self._pid == os.getpid() and self._checked:
            with self._lock:
                connection = self._connection
                if connection is not None:
                    try:
                        found: tuple[Any, ...] | None = connection.execute(
                            statement, parameters
                        ).fetchone()
                    except (sqlite3.Error, OSError) as exc:
                        raise self._fail(f"{doing} {identifier!r}", exc) from None
                    return found
        with self._using(f"{doing} {identifier!r}", create=create, write=create) as connection:
            if connection is None:
                return None
            row: tuple[Any, ...] | None = connection.execute(statement, parameters).fetchone()
            return row

    def save_record(self, object_identifier: str, record: PendingRecord) -> None:
        """Save one of the engine's task records, committed before this returns."""
        self._save_text(object_identifier, record.to_json())

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if it had state."""
        with self._using(f"remove the state of {object_identifier!r}", write=True) as connection:
            if connection is None:
                return False
            cursor = connection.execute("DELETE FROM state WHERE id = ?", (object_identifier,))
            return cursor.rowcount > 0

    def persist_all_state(self) -> None:
        """Nothing to do: every save is committed when it returns."""

    # -- run history ---------------------------------------------------------------------

    def save_run(self, run: dict[str, Any]) -> None:
        """Save `run` and its tasks in one transaction, replacing a run with its id."""
        run_id = check_run(run)
        summary = run_summary(run)
        from opus_core.history import RunTasks

        tasks = run.get("tasks") or []
        if isinstance(tasks, RunTasks):  # the engine's own entries: nothing to check
            rows = [
                (run_id, position, *engine_row(tasks, position)) for position in range(len(tasks))
            ]
        elif isinstance(tasks, list) and all(isinstance(t, dict) for t in tasks):
            for position, task in enumerate(tasks):
                to_json(f"run {run_id} task {position}", task)  # refused as state is refused
            rows = [(run_id, position, *task_row(task)) for position, task in enumerate(tasks)]
        else:
            raise OpusError(f"run {run_id!r}: tasks must be a list of dicts")
        summary_text = to_json(f"run {run_id}", summary)
        started, ended = finite_number(run.get("started_at")), finite_number(run.get("ended_at"))
        with self._using(f"save the run {run_id!r}", create=True, write=True) as connection:
            assert connection is not None
            with self._transaction(connection):
                connection.execute(
                    "INSERT OR REPLACE INTO runs (id, started_at, ended_at, status, summary) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, started, ended, str(run.get("status", "")), summary_text),
                )
                connection.execute("DELETE FROM task_runs WHERE run_id = ?", (run_id,))
                connection.executemany(
                    f"INSERT INTO task_runs (run_id, position, {_TASK_COLUMNS}) "
                    f"VALUES ({_TASK_MARKS})",
                    rows,
                )
                self._forget_runs(connection, self.keep_runs)

    @staticmethod
    def _forget_runs(connection: sqlite3.Connection, keep: int) -> int:
        """Delete every run but the `keep` newest, in the caller's transaction; how many."""
        old = connection.execute(
            "SELECT id FROM runs ORDER BY id DESC LIMIT -1 OFFSET ?", (min(keep, LARGEST),)
        ).fetchall()
        connection.executemany("DELETE FROM task_runs WHERE run_id = ?", old)
        connection.executemany("DELETE FROM runs WHERE id = ?", old)
        return len(old)

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The saved runs, newest first, without their tasks; at most `limit`."""
        with self._using("list the runs") as connection:
            if connection is None:
                return []
            rows = connection.execute(
                "SELECT id, summary FROM runs ORDER BY id DESC LIMIT ?",
                (-1 if limit is None or limit >= LARGEST else max(limit, 0),),
            ).fetchall()
        runs = []
        for run_id, text in rows:
            summary = self._decode(f"run {run_id}", text)
            if summary is not None:
                runs.append({**summary, "id": run_id})
        return runs

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """The run `run_id` with its tasks, or None if there is no such run."""
        with self._using(f"read the run {run_id!r}") as connection:
            if connection is None:
                return None
            connection.execute("BEGIN")  # the run and its tasks from one snapshot
            try:
                row = connection.execute(
                    "SELECT summary FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                tasks = connection.execute(
                    f"SELECT position, {_TASK_COLUMNS} FROM task_runs WHERE run_id = ? "
                    "ORDER BY position",
                    (run_id,),
                ).fetchall()
            finally:
                connection.execute("COMMIT")
        if row is None:
            return None
        run = self._decode(f"run {run_id}", row[0])
        if run is None:
            raise StateDatabaseError(
                f"state database {self.path}: the run {run_id!r} is damaged; "
                "`opus runs prune` removes old runs"
            )
        run["id"] = run_id
        run["tasks"] = [task for row in tasks if (task := self._task(run_id, row)) is not None]
        return run

    def _task(self, run_id: str, row: tuple[Any, ...]) -> dict[str, Any] | None:
        """The entry of a row of `task_runs`, or None (with a warning) when it is damaged."""
        position, *columns, shape, more = row
        extra = None if more is None else self._decode(f"run {run_id} task {position}", more)
        if extra is None and more is not None:
            return None
        return task_entry(tuple(columns), shape, extra)

    def prune_runs(self, keep: int) -> int:
        """Forget every run but the `keep` newest; how many were forgotten."""
        if keep < 0:
            raise OpusError(f"prune_runs keeps a number of runs, at least 0, not {keep}")
        with self._using("prune the runs", write=True) as connection:
            if connection is None:
                return 0
            with self._transaction(connection):
                return self._forget_runs(connection, keep)

    def __repr__(self) -> str:
        return f"SqlitePersistence({str(self.path)!r})"
