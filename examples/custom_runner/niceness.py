"""A processor that reports the priority its task ran at."""

from __future__ import annotations

import os

from opus_core import TaskProcessor


class Niceness(TaskProcessor):
    """Publishes `<task id>_niceness`: the niceness of the process the task ran in."""

    kind = "Niceness"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        niceness = os.nice(0)
        self.logger.info(f"{task.task_id} ran at niceness {niceness}")
        return {f"{task.task_id}_niceness": niceness}
