"""The processor of the manifests example (named in opus.toml's `[opus] processors`)."""

from __future__ import annotations

import time
from typing import Any

from opus_core import KeyValueStore, StatePersistence, Task, TaskProcessor


class Step(TaskProcessor):
    """Logs `spec.message` and the `owner` annotation, waits `spec.seconds` (default 0),
    and publishes what `spec.publish` lists."""

    kind = "Step"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        time.sleep(float(task.spec.get("seconds", 0)))
        owner = task.meta.annotations.get("owner")
        suffix = f" (owner: {owner})" if owner else ""
        self.logger.info(f"{task.name}: {task.spec['message']}{suffix}")
        return dict(task.spec.get("publish", {}))
