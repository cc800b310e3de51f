"""The `memory` persistence: state in this process only, for the life of the process.

What `Tasks()` uses when no persistence is given, and what `StatePersistence()`
gives. It is a plain `StatePersistence` whose fast paths are ordinary
overrides: state is kept as JSON text (checked once, copied for free), and the
engine's task records and runs are kept as the objects the engine hands over
(`save_record`, `adopt_run_records`, `save_run` with `lazy_run_tasks`), their
state made only when read — a million-task run costs no dict per task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.persistence.base import (
    RUN_HISTORY,
    RUN_RECORDS,
    StatePersistence,
    check_run,
    json_copy,
    run_summary,
    to_json,
)

if TYPE_CHECKING:
    from opus_core.records import PendingRecord, RecordTable

MEMORY_RUNS = 20
"""How many runs the in-memory persistence keeps in its history (the newest)."""


class _Run:
    """A run kept as it was handed over (see `MemoryPersistence.save_run`)."""

    __slots__ = ("run",)

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = dict(run)


def _load(stored: Any) -> dict[str, Any]:
    """The state of what is kept: JSON text, a kept run, or a record (`to_state()`)."""
    if isinstance(stored, str):
        import json  # here: the json module is not needed to start opus

        loaded: dict[str, Any] = json.loads(stored)
        return loaded
    if isinstance(stored, _Run):
        from opus_core.history import materialized

        return json_copy(str(stored.run.get("id")), materialized(stored.run))
    state: dict[str, Any] = stored.to_state()
    return state


class MemoryPersistence(StatePersistence, made_directly=True):
    """State kept in memory, in this process only (`"memory"`).

    A pickled copy (what a runner that does not share memory ships with each
    task) holds the state as it stood, not the engine's records or run
    history; what the copy saves stays in the copy. Keeps the newest
    `MEMORY_RUNS` runs.
    """

    name: ClassVar[str] = "memory"
    lazy_run_tasks: ClassVar[bool] = True

    def __init__(self, logger: object = None) -> None:
        # State is kept as JSON text. The engine's records and runs are kept apart, so
        # that a pickled copy (__getstate__) leaves them out.
        self._json: dict[str, str] = {}
        self._records: dict[str, Any] = {}  # JSON text, a PendingRecord or a _Run
        self._runs_records: list[RecordTable] = []  # whole runs' records (adopt_run_records)

    def _table(self, object_identifier: str) -> dict[str, Any]:
        if object_identifier.startswith((RUN_RECORDS, RUN_HISTORY)):
            return self._records
        return self._json

    # -- state -------------------------------------------------------------------------

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state."""
        state = {
            key: _load(stored)
            for table in (self._json, self._records)
            for key, stored in table.items()
        }
        for records in self._runs_records:  # the newest last: it wins
            for key, index in records.identifiers():
                state[key] = records.to_state(index)
        return state

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state saved for `object_identifier`, or an empty dict."""
        if self._runs_records and object_identifier.startswith(RUN_RECORDS):
            found = self._from_runs(object_identifier)
            if found is not None:
                return found
        stored = self._table(object_identifier).get(object_identifier)
        return {} if stored is None else _load(stored)

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`."""
        text = to_json(object_identifier, data)  # checks the identifier too
        self._table(object_identifier)[object_identifier] = text
        self._replace_in_runs(object_identifier)

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if there was anything to forget."""
        in_runs = self._replace_in_runs(object_identifier)
        return self._table(object_identifier).pop(object_identifier, None) is not None or in_runs

    # -- the engine's records: kept as handed over -------------------------------------

    def save_record(self, object_identifier: str, record: PendingRecord) -> None:
        """Keep `record` itself; its state is made when it is read."""
        self._records[object_identifier] = record
        self._replace_in_runs(object_identifier)

    def adopt_run_records(self, table: RecordTable) -> bool:
        """Keep the run's records as the scheduler's columns (see `RecordTable`)."""
        self._runs_records.append(table)
        return True

    def run_records_finished(self, table: RecordTable) -> None:
        """An earlier run's table of the same command and context keeps only the records
        `table`'s run did not replace, each on its own."""
        for older in [t for t in self._runs_records if t is not table and t.prefix == table.prefix]:
            for key, index in older.identifiers():
                if table.find(key[len(table.prefix) :]) is None:
                    self._records[key] = older.record(index)
            self._runs_records.remove(older)

    def _from_runs(self, object_identifier: str) -> dict[str, Any] | None:
        for table in reversed(self._runs_records):
            if object_identifier.startswith(table.prefix):
                index = table.find(object_identifier[len(table.prefix) :])
                if index is not None:
                    return table.to_state(index)
        return None

    def _replace_in_runs(self, object_identifier: str) -> bool:
        """Forget the run tables' record `object_identifier` (it is saved or deleted anew)."""
        found = False
        if self._runs_records and object_identifier.startswith(RUN_RECORDS):
            for table in self._runs_records:
                if object_identifier.startswith(table.prefix):
                    found = table.discard(object_identifier[len(table.prefix) :]) or found
        return found

    # -- run history: kept as handed over ----------------------------------------------

    def save_run(self, run: dict[str, Any]) -> None:
        """Keep `run` as it is (its tasks may be a `RunTasks`), copied through JSON when
        read; only the newest `MEMORY_RUNS` runs are kept, so that a process that runs
        forever does not grow forever."""
        key = f"{RUN_HISTORY}{check_run(run)}"
        self._records.pop(key, None)
        self._records[key] = _Run(run)
        kept = [k for k in self._records if k.startswith(RUN_HISTORY)]
        for old in sorted(kept)[: max(0, len(kept) - MEMORY_RUNS)]:
            del self._records[old]

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The saved runs, newest first, without their `tasks` (which are not copied)."""
        summaries = []
        for key in sorted((k for k in self._records if k.startswith(RUN_HISTORY)), reverse=True):
            stored = self._records[key]
            run = stored.run if isinstance(stored, _Run) else _load(stored)
            run_id = key[len(RUN_HISTORY) :]
            if run.get("id") == run_id:
                summaries.append(json_copy(run_id, run_summary(run)))
        return summaries if limit is None else summaries[: max(limit, 0)]

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every kept run by id (the history only, not every record)."""
        runs = {}
        for key, stored in list(self._records.items()):
            if key.startswith(RUN_HISTORY):
                run = _load(stored)
                if run.get("id") == key[len(RUN_HISTORY) :]:
                    runs[key[len(RUN_HISTORY) :]] = run
        return runs

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to the workers of a runner that does not share memory (dask): processors
        # may read their own state there, but the engine's records and runs stay behind, so
        # what travels with each task does not grow with the size of the run.
        state = dict(self.__dict__)
        state["_records"] = {}
        state["_runs_records"] = []
        return state
