"""Processors of the pipeline example (used by pipeline.py and pipeline/opus.toml)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from opus_core import KeyValueStore, StatePersistence, Task, TaskProcessor


class Provision(TaskProcessor):
    """Pretends to create a resource; publishes what `spec.publish` lists."""

    kind = "Provision"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        self.logger.info(f"{task.name}: {task.spec.get('message', 'provisioned')} ({context})")
        return dict(task.spec.get("publish", {}))


class SmokeTest(TaskProcessor):
    """A flaky check: every other attempt fails, so a retry always rescues it."""

    kind = "SmokeTest"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        # One marker per session (the run's processes share it; another run at the same
        # time, or one killed between its attempts, has its own).
        marker = (
            Path(tempfile.gettempdir()) / f"opus-smoke-test-{os.getsid(0)}-{task.checksum[:16]}"
        )
        if not marker.exists():
            marker.touch()
            raise ConnectionError(f"{task.spec['url']} did not answer (first attempt)")
        marker.unlink()
        return {"smoke_test": f"{task.spec['url']} answered"}
