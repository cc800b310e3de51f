"""`StatePersistence`: the persistence contract.

A persistence keeps *state*: a JSON object (a dict) per identifier. It
implements four methods — `get_object_state`, `save_object_state`,
`delete_object_state` and `retrieve_all_state_from_persistence` — and sets a
`name`. Everything else the engine needs is built on those four here: the run
history (`save_run`, `list_runs`, `load_run`, `prune_runs`, kept as state under
the reserved prefix `RUN_HISTORY`), the engine's task records (`save_record`,
kept under `RUN_RECORDS`) and `persist_all_state`. A persistence with a better
place for runs or records (`sqlite`, `memory`) overrides those methods; none
has to. docs/persistence.md is the guide.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
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
    """Reject identifiers that are not non-empty strings and data that is not a dict."""
    if not isinstance(object_identifier, str) or not object_identifier:
        raise OpusError(f"state identifier must be a non-empty string, got {object_identifier!r}")
    if not isinstance(data, dict):
        raise OpusError(
            f"state for {object_identifier!r} must be a dict, got {type(data).__name__}"
        )


RUN_RECORDS = "opus-run:"
"""The prefix of the identifiers of the engine's run records (see `opus_core.records`)."""

RUN_HISTORY = "opus-history:"
"""The prefix under which the default run history keeps each run (`save_run`)."""

_encoder: Any = None  # a json.JSONEncoder, made when state is first encoded
_JSON_TYPES = (str, int, float, bool, type(None))
_LEAVES = frozenset(_JSON_TYPES)


def _altered(value: Any, where: str = "") -> str | None:
    """Where and how `value` would not come back from JSON as it is, or None if it would.

    `where` is the path to `value` (`['tags'][0]`); call it only on data the encoder took
    (finite, free of cycles), so that the walk ends. The path is spelled out only for a
    value that would not come back: a walk over good data makes no string.
    """
    found = _first_altered(value)
    if found is None:
        return None
    path, kind, key = found
    at = where + "".join(f"[{step!r}]" for step in path)
    if key is not None:
        return (
            f"the key {key!r} in {at or 'the state'} is a {type(key).__name__} "
            "and would come back as a str"
        )
    at = f" at {at}" if at else ""
    if kind is tuple:
        return f"a tuple{at} would come back as a list"
    return f"a {kind.__module__}.{kind.__qualname__}{at} would not come back as itself"


def _first_altered(value: Any) -> tuple[list[Any], type, Any] | None:
    """The path to the first value in `value` that JSON would alter, its type, and the key
    (when it is a key that is not a `str`); None when there is none."""
    kind = type(value)
    if kind in _LEAVES:
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return [], dict, key
            if type(item) in _LEAVES:
                continue
            found = _first_altered(item)
            if found is not None:
                found[0].insert(0, key)
                return found
        return None
    if kind is list:
        for index, item in enumerate(value):
            if type(item) in _LEAVES:
                continue
            found = _first_altered(item)
            if found is not None:
                found[0].insert(0, index)
                return found
        return None
    return [], kind, None


def to_json(object_identifier: str, data: dict[str, Any]) -> str:
    """`data` as JSON text, after `check_state`; raises `OpusError` naming the identifier
    when `data` would not come back from JSON exactly as it is.

    The value rules: dicts with `str` keys, lists, `str`, `int` (any size),
    finite `float`, `bool` and `None`, nested as deep as Python's `json` goes.
    A tuple (it would come back a list), a non-`str` key (it would come back a
    string), NaN or an infinity, a subclass (an `IntEnum`, an `OrderedDict`)
    or any other object is refused, never silently altered. Every built-in
    persistence saves through this; a third-party one should too.
    """
    check_state(object_identifier, data)
    try:
        text = json_text(data)
        # What the encoder lets through may still change on the way (a tuple, an int key,
        # an IntEnum): walk it, now that it is known to be finite and free of cycles.
        reason = _altered(data)
    except (TypeError, ValueError, RecursionError) as exc:
        reason = str(exc) or type(exc).__name__
    if reason is not None:
        raise OpusError(f"state for {object_identifier!r} is not JSON data: {reason}")
    return text


def json_text(data: Any) -> str:
    """`data` as JSON text, with no check beyond the encoder's own (no NaN, no cycle, no
    object it does not know): for data opus made from checked parts, such as a task's
    record or its entry in the run history. Use `to_json` for anything else."""
    global _encoder
    if _encoder is None:
        import json  # here: the json module is not needed to start opus

        _encoder = json.JSONEncoder(allow_nan=False)
    return str(_encoder.encode(data))


def json_copy(object_identifier: str, data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` through JSON (refused as `to_json` refuses)."""
    import json

    copied: dict[str, Any] = json.loads(to_json(object_identifier, data))
    return copied


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


class StatePersistence(abc.ABC):
    """Where task state is kept: a JSON object (dict) per identifier (usually a task id).

    **Implement** the four state methods — `get_object_state`,
    `save_object_state`, `delete_object_state`,
    `retrieve_all_state_from_persistence` — and set `name` (what
    `[opus] persistence` and `[persistence.NAME]` use). Options come as keyword
    arguments of `__init__`, from `[persistence.NAME]` in opus.toml.

    **Defaults built on those four**, to override only for speed or a better
    place: `persist_all_state` (nothing: saves are durable when they return),
    the run history `save_run`, `list_runs`, `load_run`, `prune_runs` (each run
    is the state of `RUN_HISTORY + id`), and the engine's task records
    (`save_record`, `adopt_run_records`, `run_records_finished`).

    **Promises** every persistence keeps (`opus_core.testing.PersistenceContract`
    checks them): what is read back is what was saved, and what JSON cannot
    bring back unchanged is refused with an `OpusError` (save through
    `to_json`); a pickled copy works on the same store (open files and
    connections lazily, never pickle them: runners that do not share memory
    ship the persistence with every task); `supports_concurrent_processes`
    says whether two processes may write one store at once.

    `StatePersistence()` itself gives the in-memory persistence
    (`MemoryPersistence`, named `memory`), as it always has.
    """

    name: ClassVar[str]
    """The name users configure: `[opus] persistence = "NAME"`, `[persistence.NAME]`."""

    supports_concurrent_processes: ClassVar[bool] = False
    """True if several processes may save into one store at once and nothing is lost
    (as `sqlite` and `file` promise); `PersistenceContract` then checks it with two
    real processes."""

    lazy_run_tasks: ClassVar[bool] = False
    """True if `save_run` takes a run whose `tasks` is a `opus_core.history.RunTasks` (a
    sequence that makes each task's dict when it is read) instead of a list; the
    in-memory persistence keeps runs as they are handed over and sets it."""

    _made_directly: ClassVar[type[StatePersistence] | None] = None
    """What `StatePersistence()` makes: the subclass declared with `made_directly=True`
    (`MemoryPersistence`, which `opus_core.persistence` always imports)."""

    def __init_subclass__(cls, *, made_directly: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if made_directly:
            StatePersistence._made_directly = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> StatePersistence:
        made = StatePersistence._made_directly
        if cls is StatePersistence and made is not None:  # the seed's `StatePersistence()`
            return super().__new__(made)
        return super().__new__(cls)

    def __init__(self, logger: object = None) -> None:  # noqa: B027 - nothing to set up
        """Nothing to set up here; `logger` is accepted, and ignored, as the seed's
        persistence took one (so `super().__init__(logger)` keeps working)."""

    # -- state: the four methods a persistence implements ------------------------------

    @abc.abstractmethod
    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state saved for `object_identifier`, or an empty dict if there is none.

        The caller owns what is returned: changing it changes nothing saved.
        """

    @abc.abstractmethod
    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`.

        Refuse what JSON cannot bring back unchanged with an `OpusError` naming the
        identifier (`to_json` does it). Once this returns, the state is saved: a
        fresh instance on the same store reads it.
        """

    @abc.abstractmethod
    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if it had state."""

    @abc.abstractmethod
    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state (the run history and records included)."""

    def get_object_states(self, object_identifiers: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The state of each of `object_identifiers` that has one, by identifier: what
        `get_object_state` says of each, in one call. Identifiers with no state, and those
        whose state cannot be read, are left out.

        The engine asks it for many at once (the file cache, before a run, for the entries
        and records of the run's cached tasks). The default asks `get_object_state` for
        each; a persistence that reads many at once for less (one query) overrides it.
        """
        found: dict[str, dict[str, Any]] = {}
        for identifier in object_identifiers:
            try:
                data = self.get_object_state(identifier)
            except OpusError:
                continue
            if data:
                found[identifier] = data
        return found

    def persist_all_state(self) -> None:
        """Make everything saved so far durable; called at the end of each run.

        The default does nothing, for a persistence whose saves are durable when they
        return; override it in one that buffers writes.
        """
        return

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """A copy of everything saved (the seed's attribute)."""
        return self.retrieve_all_state_from_persistence()

    # -- the engine's task records (opus_core.records) ---------------------------------

    def save_record(self, object_identifier: str, record: PendingRecord) -> None:
        """Save one of the engine's task records, as the task finishes.

        The default saves `record.to_state()` through `save_object_state`; the
        in-memory persistence keeps `record` itself and makes its state when read.
        """
        self.save_object_state(object_identifier, record.to_state())

    def adopt_run_records(self, table: RecordTable) -> bool:
        """Offered at the start of a run: keep `table`, the run's records as the
        scheduler's own columns, instead of a `save_record` call per task? The
        default declines (False), and each record comes through `save_record`."""
        return False

    def run_records_finished(self, table: RecordTable) -> None:
        """The run whose records `adopt_run_records` took has ended (the default: nothing)."""
        return

    # -- run history (opus_core.history) ------------------------------------------------

    def save_run(self, run: dict[str, Any]) -> None:
        """Save `run` (a dict as `opus_core.history` makes it), replacing a run with its id.

        The engine saves each run twice: when it starts (status "running", no
        tasks) and when it ends. The default keeps it as the state of
        `RUN_HISTORY + id`, through `save_object_state`.
        """
        from opus_core.history import materialized

        run_id = check_run(run)
        self.save_object_state(f"{RUN_HISTORY}{run_id}", materialized(run))

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The saved runs, newest first (by id), without their `tasks`; at most `limit`."""
        runs = [run_summary(run) for _, run in sorted(self.runs().items(), reverse=True)]
        return runs if limit is None else runs[: max(limit, 0)]

    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """The run `run_id`, tasks included, or None if there is no such run."""
        data = self.get_object_state(f"{RUN_HISTORY}{run_id}")
        return data if data and data.get("id") == run_id else None

    def prune_runs(self, keep: int) -> int:
        """Forget every run but the `keep` newest; how many were forgotten."""
        if keep < 0:
            raise OpusError(f"prune_runs keeps a number of runs, at least 0, not {keep}")
        old = sorted(self.runs(), reverse=True)[keep:]
        for run_id in old:
            self.delete_object_state(f"{RUN_HISTORY}{run_id}")
        return len(old)

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every saved run by id, tasks included: what the default `list_runs` and
        `prune_runs` read (the default: the `RUN_HISTORY` entries of all the state)."""
        runs = {}
        for key, data in self.retrieve_all_state_from_persistence().items():
            if key.startswith(RUN_HISTORY) and data.get("id") == key[len(RUN_HISTORY) :]:
                runs[key[len(RUN_HISTORY) :]] = data
        return runs


StatePersistance = StatePersistence
"""The seed's spelling of `StatePersistence`."""
