"""The tables of the `sqlite` persistence's database, and how an older database is brought
to them.

`state` (id, JSON) holds state and the engine's task records; `runs` (one row per run,
its summary as JSON) and `task_runs` (one row per task of a run, its fields as columns:
`opus_core.persistence.sqlite_rows`) hold the run history. `PRAGMA application_id` says
the database is opus's, `PRAGMA user_version` which schema it has. A database of the
first schema (each task of a run one JSON object) is brought to this one, in the
transaction that first writes it, its rows kept as they were. The third schema has the
tables of the second and one more bit in a row's `shape` (`NO_DEPENDENCIES`), which no
row of the second has: a database of the second is only marked as the third when opened
(so an opus that knows the second refuses it once the new bit may be in it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opus_core.persistence.sqlite_rows import ALL_ABSENT, COLUMNS

if TYPE_CHECKING:
    import sqlite3

APPLICATION_ID = 0x6F707573  # "opus": how opus knows its own databases
SCHEMA_VERSION = 3

TASK_RUNS = f"""
CREATE TABLE IF NOT EXISTS task_runs (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    {", ".join(COLUMNS)},
    shape INTEGER NOT NULL,
    more TEXT,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID
"""
"""A task of a run: its fields in columns of no type (SQLite gives back what it was given)."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS state (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    started_at REAL,
    ended_at REAL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL
) WITHOUT ROWID;
{TASK_RUNS};
"""

FROM_FIRST_SCHEMA = f"""
ALTER TABLE task_runs RENAME TO task_runs_1;
{TASK_RUNS};
INSERT INTO task_runs (run_id, position, shape, more)
    SELECT run_id, position, {ALL_ABSENT}, data FROM task_runs_1;
DROP TABLE task_runs_1
"""
"""Brings `task_runs` from the first schema (name, status and the entry as JSON) to the
second: each row kept as it was, the whole entry in `more`."""


def make_schema(connection: sqlite3.Connection) -> None:
    """Make the tables, or bring those of the first schema to this one, in the write
    transaction the caller holds (another process may have done it meanwhile)."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    statements = {0: SCHEMA, 1: FROM_FIRST_SCHEMA}.get(version, "")  # 2: the same tables
    for statement in statements.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
