"""Where task state is kept: the `StatePersistence` contract and the core's two persistences.

`base` holds the contract (docs/persistence.md is the guide), `memory` the
`memory` persistence, `folder` the project's state folder (`state_folder`), and
`sqlite` the `sqlite` persistence, imported only when it is used.
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
from opus_core.persistence.folder import state_folder
from opus_core.persistence.memory import MemoryPersistence

__all__ = [
    "RUN_HISTORY",
    "RUN_RECORDS",
    "MemoryPersistence",
    "StatePersistance",
    "StatePersistence",
    "check_state",
    "json_copy",
    "state_folder",
    "to_json",
]
