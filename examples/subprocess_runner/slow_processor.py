"""A processor for the example: `spec.seconds` of work, then the task's process id."""

from __future__ import annotations

import os
import time
from typing import Any

from opus_core import TaskProcessor


class Sleep(TaskProcessor):
    """Sleeps `spec.seconds`, writing its process id to `spec.pid_file` first if given."""

    kind = "Sleep"

    def process_task(self, task, command, context, key_value_store, state_persistence) -> Any:  # type: ignore[no-untyped-def]
        if "pid_file" in task.spec:
            with open(task.spec["pid_file"], "w") as file:
                file.write(str(os.getpid()))
        time.sleep(task.spec.get("seconds", 0))
        return {f"{task.task_id}_pid": os.getpid()}
