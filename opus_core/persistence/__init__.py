"""Where task state is kept: the `StatePersistence` contract and the core's two persistences.

`base` holds the contract and the `memory` persistence (the base class
itself); `sqlite` the `sqlite` persistence, imported only when it is used.
"""

from opus_core.persistence.base import (
    RUN_HISTORY,
    RUN_RECORDS,
    StatePersistance,
    StatePersistence,
    check_state,
    json_copy,
    to_json,
)

__all__ = [
    "RUN_HISTORY",
    "RUN_RECORDS",
    "StatePersistance",
    "StatePersistence",
    "check_state",
    "json_copy",
    "to_json",
]
