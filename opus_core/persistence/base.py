"""`StatePersistence`: where task state is kept. The base class keeps it in memory.

The contract has two parts. State: a JSON-compatible dict per identifier
(`get_object_state`, `save_object_state`, `delete_object_state`,
`retrieve_all_state_from_persistence`, `persist_all_state`). Run history:
`save_run`, `list_runs`, `load_run`, `prune_runs` (see `opus_core.history` for
what a run holds). The base class keeps runs as ordinary state under the
reserved prefix `RUN_HISTORY`, so a persistence that implements the state part
keeps history too; one with a better place for runs (`sqlite`) overrides them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError

if TYPE_CHECKING:
    from opus_core.records import PendingRecord, RecordTable


def finite_number(value: object) -> float | None:
    """`value` as a float if it is a finite number (not a bool), else None: how times and
    durations read back from stored state and run history are taken."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if number - number == 0 else None  # NaN and infinities are not


def check_state(object_identifier: object, data: object) -> None:
    """Reject identifiers that are not strings and data that is not a dict."""
    if not isinstance(object_identifier, str) or not object_identifier:
        raise OpusError(f"state identifier must be a non-empty string, got {object_identifier!r}")
    if not isinstance(data, dict):
        raise OpusError(
            f"state for {object_identifier!r} must be a dict, got {type(data).__name__}"
        )


_encoder: Any = None  # a json.JSONEncoder, made when state is first encoded

RUN_RECORDS = "opus-run:"
"""The prefix of the identifiers of the engine's run records (see `opus_core.records`)."""

RUN_HISTORY = "opus-history:"
"""The prefix under which the base class keeps each run of the history (`save_run`)."""


def check_run(run: object) -> str:
    """The id of `run`, a run of the history; raises `OpusError` if it is not one."""
    if not isinstance(run, dict):
        raise OpusError(f"a run must be a dict, got {type(run).__name__}")
    run_id = run.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise OpusError(f"a run needs a non-empty string id, got {run_id!r}")
    return run_id


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """`run` without its `tasks`: what `list_runs` returns."""
    return {key: value for key, value in run.items() if key != "tasks"}


def to_json(object_identifier: str, data: dict[str, Any]) -> str:
    """`data` as JSON text, which is what every persistence can store."""
    global _encoder
    if _encoder is None:
        import json  # here: the json module is not needed to start opus

        _encoder = json.JSONEncoder(allow_nan=False)
    try:
        return str(_encoder.encode(data))
    except (TypeError, ValueError) as exc:
        raise OpusError(f"state for {object_identifier!r} is not JSON data: {exc}") from None


def json_copy(object_identifier: str, data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` through JSON."""
    import json

    copied: dict[str, Any] = json.loads(to_json(object_identifier, data))
    return copied


MEMORY_RUNS = 20
"""How many runs the in-memory persistence keeps in its history (the newest)."""


class _Run:
    """A run kept in memory as it was handed over (see `StatePersistence.save_run`)."""

    __slots__ = ("run",)

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = dict(run)


class StatePersistence:
    """State kept by object identifier (usually a task id), as JSON-compatible dicts.

    This base class keeps everything in memory for the life of the process (the
    `memory` persistence). Subclasses store it elsewhere: override
    `retrieve_all_state_from_persistence`, `get_object_state`, `save_object_state`,
    `delete_object_state` and `persist_all_state`, and set a `name`. The run
    history (`save_run`, `list_runs`, `load_run`, `prune_runs`) then works
    through those; override it too to keep runs elsewhere.
    """

    name: ClassVar[str] = "memory"

    def __init__(self, logger: object = None) -> None:
        # Kept as JSON text: checked once, copied for free. The engine's run records are
        # kept apart, so that shipping this object to workers (__getstate__) leaves them out.
        self._json: dict[str, Any] = {}
        self._records: dict[str, Any] = {}  # JSON text, or a PendingRecord (see save_record)
        self._runs_records: list[RecordTable] = []  # whole runs' records (_adopt_records)

    def _table(self, object_identifier: str) -> dict[str, Any]:
        if object_identifier.startswith(RUN_RECORDS) or object_identifier.startswith(RUN_HISTORY):
            return self._records
        return self._json

    # -- the engine's records of a whole run, kept as the scheduler keeps the run ----------

    def _in_memory(self) -> bool:
        """Whether this is the in-memory persistence as this class implements it (no
        subclass stores or reads state its own way), which keeps the engine's records and
        runs as objects; every other persistence gets them as state."""
        cls = type(self)
        return (
            cls.save_object_state is StatePersistence.save_object_state
            and cls.save_record is StatePersistence.save_record
            and cls.get_object_state is StatePersistence.get_object_state
            and cls.retrieve_all_state_from_persistence
            is StatePersistence.retrieve_all_state_from_persistence
        )

    def _adopt_records(self, table: RecordTable) -> bool:
        """Keep `table`, the records of a run that is starting, as the run fills it; False
        (nothing kept) unless this is the in-memory persistence, whose records are
        then made when read (see `opus_core.records.RecordTable`)."""
        if not self._in_memory():
            return False
        self._runs_records.append(table)
        return True

    def _records_finished(self, table: RecordTable) -> None:
        """`table`'s run ended: an earlier run's table of the same command and context
        keeps only the records this one did not replace, each on its own."""
        from opus_core.records import TableRecord

        for older in [t for t in self._runs_records if t is not table and t.prefix == table.prefix]:
            for key, index in older.identifiers():
                if table.find(key[len(table.prefix) :]) is None:
                    self._records[key] = TableRecord(older, index)
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

    @staticmethod
    def _load(stored: Any) -> dict[str, Any]:
        if isinstance(stored, _Run):
            from opus_core.history import materialized

            return json_copy(str(stored.run.get("id")), materialized(stored.run))
        if not isinstance(stored, str):
            state: dict[str, Any] = stored.to_state()
            return state
        import json

        loaded: dict[str, Any] = json.loads(stored)
        return loaded

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """A copy of everything saved (the seed's attribute)."""
        return self.retrieve_all_state_from_persistence()

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state."""
        state = {
            key: self._load(stored)
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
        return {} if stored is None else self._load(stored)

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`."""
        check_state(object_identifier, data)
        self._table(object_identifier)[object_identifier] = to_json(object_identifier, data)
        self._replace_in_runs(object_identifier)

    def save_record(self, object_identifier: str, record: PendingRecord) -> None:
        """Save one of the engine's run records (`opus_core.records`).

        The in-memory persistence keeps `record` itself and makes its state
        when it is read; every other persistence saves `record.to_state()`
        like any state (override this to store records differently).
        """
        if self._in_memory():
            self._records[object_identifier] = record
            self._replace_in_runs(object_identifier)
        else:
            self.save_object_state(object_identifier, record.to_state())

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if there was anything to forget."""
        in_runs = self._replace_in_runs(object_identifier)
        return self._table(object_identifier).pop(object_identifier, None) is not None or in_runs

    # -- run history ------------------------------------------------------------------

    def save_run(self, run: dict[str, Any]) -> None:
        """Save `run` (a dict as `opus_core.history` makes it), replacing a run with its id.

        The engine saves each run twice: when it starts (status "running") and
        when it ends. This implementation keeps it as the state of
        `RUN_HISTORY + id`, through `save_object_state`; the in-memory
        persistence keeps the newest `MEMORY_RUNS` runs.
        """
        run_id = check_run(run)
        key = f"{RUN_HISTORY}{run_id}"
        if not self._in_memory():
            from opus_core.history import materialized

            self.save_object_state(key, materialized(run))
            return
        # In memory, as with records: the run itself, copied through JSON when read (the
        # engine hands over a new dict and does not change it later; its tasks may be a
        # `RunTasks`, which makes each task's entry only then). Only the newest
        # MEMORY_RUNS are kept: a process that runs forever must not grow forever.
        self._records.pop(key, None)
        self._records[key] = _Run(run)
        runs = [k for k in self._records if k.startswith(RUN_HISTORY)]
        for old in sorted(runs)[: max(0, len(runs) - MEMORY_RUNS)]:
            del self._records[old]

    def _history(self) -> dict[str, dict[str, Any]]:
        """Every saved run by id (this implementation: the `RUN_HISTORY` state)."""
        if self._in_memory():  # kept here: read only the history, not every record
            items = [
                (k, self._load(v)) for k, v in self._records.items() if k.startswith(RUN_HISTORY)
            ]
        else:
            items = list(self.retrieve_all_state_from_persistence().items())
        runs = {}
        for key, data in items:
            if key.startswith(RUN_HISTORY) and data.get("id") == key[len(RUN_HISTORY) :]:
                runs[key[len(RUN_HISTORY) :]] = data
        return runs

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The saved runs, newest first (by id), without their `tasks`; at most `limit`."""
        if self._in_memory():  # kept here: summaries without copying every run's tasks
            kept = {
                k[len(RUN_HISTORY) :]: run_summary(v.run) if isinstance(v, _Run) else v
                for k, v in self._records.items()
                if k.startswith(RUN_HISTORY)
            }
            history = {
                run_id: json_copy(run_id, run) if isinstance(run, dict) else self._load(run)
                for run_id, run in kept.items()
            }
        else:
            history = self._history()
        runs = [run_summary(run) for _, run in sorted(history.items(), reverse=True)]
        return runs if limit is None else runs[: max(limit, 0)]

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """The run `run_id`, tasks included, or None if there is no such run."""
        data = self.get_object_state(f"{RUN_HISTORY}{run_id}")
        return data if data and data.get("id") == run_id else None

    def prune_runs(self, keep: int) -> int:
        """Forget every run but the `keep` newest; how many were forgotten."""
        if keep < 0:
            raise OpusError(f"prune_runs keeps a number of runs, at least 0, not {keep}")
        old = sorted(self._history(), reverse=True)[keep:]
        for run_id in old:
            self.delete_object_state(f"{RUN_HISTORY}{run_id}")
        return len(old)

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to the workers of a runner that does not share memory (dask): processors
        # may read their own state there, but the engine's run records stay behind, so
        # what travels with each task does not grow with the size of the run.
        state = dict(self.__dict__)
        state["_records"] = {}
        state["_runs_records"] = []
        return state

    def persist_all_state(self) -> None:
        """Make everything saved so far durable (nothing to do in memory)."""


StatePersistance = StatePersistence
"""The seed's spelling of `StatePersistence`."""
