"""`StatePersistence`: where task state is kept. The base class keeps it in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from opus_core.errors import OpusError

if TYPE_CHECKING:
    from opus_core.records import PendingRecord


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


class StatePersistence:
    """State kept by object identifier (usually a task id), as JSON-compatible dicts.

    This base class keeps everything in memory for the life of the process (the
    `memory` persistence). Subclasses store it elsewhere: override
    `retrieve_all_state_from_persistence`, `get_object_state`, `save_object_state`,
    `delete_object_state` and `persist_all_state`, and set a `name`.
    """

    name: ClassVar[str] = "memory"

    def __init__(self, logger: object = None) -> None:
        # Kept as JSON text: checked once, copied for free. The engine's run records are
        # kept apart, so that shipping this object to workers (__getstate__) leaves them out.
        self._json: dict[str, Any] = {}
        self._records: dict[str, Any] = {}  # JSON text, or a PendingRecord (see save_record)

    def _table(self, object_identifier: str) -> dict[str, Any]:
        return self._records if object_identifier.startswith(RUN_RECORDS) else self._json

    @staticmethod
    def _load(stored: Any) -> dict[str, Any]:
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
        return {
            key: self._load(stored)
            for table in (self._json, self._records)
            for key, stored in table.items()
        }

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state saved for `object_identifier`, or an empty dict."""
        stored = self._table(object_identifier).get(object_identifier)
        return {} if stored is None else self._load(stored)

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`."""
        check_state(object_identifier, data)
        self._table(object_identifier)[object_identifier] = to_json(object_identifier, data)

    def save_record(self, object_identifier: str, record: PendingRecord) -> None:
        """Save one of the engine's run records (`opus_core.records`).

        The in-memory persistence keeps `record` itself and makes its state
        when it is read; every other persistence saves `record.to_state()`
        like any state (override this to store records differently).
        """
        if type(self).save_object_state is StatePersistence.save_object_state:
            self._records[object_identifier] = record
        else:
            self.save_object_state(object_identifier, record.to_state())

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if there was anything to forget."""
        return self._table(object_identifier).pop(object_identifier, None) is not None

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to the workers of a runner that does not share memory (dask): processors
        # may read their own state there, but the engine's run records stay behind, so
        # what travels with each task does not grow with the size of the run.
        state = dict(self.__dict__)
        state["_records"] = {}
        return state

    def persist_all_state(self) -> None:
        """Make everything saved so far durable (nothing to do in memory)."""


StatePersistance = StatePersistence
"""The seed's spelling of `StatePersistence`."""
