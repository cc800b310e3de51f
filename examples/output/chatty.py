"""A processor that prints and logs, and fails every other attempt: the first of each run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from opus_core import KeyValueStore, StatePersistence, Task, TaskProcessor

log = logging.getLogger("chatty")


class Chatty(TaskProcessor):
    """Prints each row and logs; fails when the count of attempts in `spec.counter` (a file,
    relative to the project folder) is odd."""

    kind = "Chatty"
    version = "v1"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        counter = Path(task.spec["counter"])
        counter.parent.mkdir(parents=True, exist_ok=True)
        with counter.open("a") as tally:
            tally.write(".")
        attempts = len(counter.read_text())
        print(f"attempt {attempts}: fetching {task.spec['rows']} rows")
        for row in range(task.spec["rows"]):
            print(f"row {row}")
        if attempts % 2 == 1:
            print("the server went away", file=sys.stderr)
            log.warning("connection lost after %d rows", task.spec["rows"])
            raise ConnectionError("connection lost")
        self.logger.info(f"{task.name}: all {task.spec['rows']} rows fetched")
        return {"rows": task.spec["rows"]}
