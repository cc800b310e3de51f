"""The old home of function tasks, kept as an import path: they live in `opus_core.functions`.

`@task` and `TaskFunction` are in `opus_core.functions.decorator`, `RunList` and
`unmapped` in `opus_core.functions.mapping`, `wait`, `as_completed` and their
constants in `opus_core.functions.waiting`; `opus_core` exports them all.
"""

from opus_core.functions.decorator import TaskFunction, task
from opus_core.functions.mapping import RunList, unmapped
from opus_core.functions.waiting import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    DoneAndNotDone,
    as_completed,
    wait,
)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "DoneAndNotDone",
    "RunList",
    "TaskFunction",
    "as_completed",
    "task",
    "unmapped",
    "wait",
]
