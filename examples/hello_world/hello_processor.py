"""The HelloWorld processor: writes "Hello World!" to a file and publishes its path."""

from __future__ import annotations

import tempfile
from pathlib import Path

from opus_core import KeyValueStore, StatePersistence, Task, TaskProcessor


class HelloWorldTaskProcessor(TaskProcessor):
    """Writes "Hello World!" to `spec.file` (relative paths: in `spec.directory`,
    default the system's temporary directory) and publishes it as `hello_world_file`."""

    kind = "HelloWorld"
    commands = ("apply",)

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> KeyValueStore:
        directory = Path(task.spec.get("directory") or tempfile.gettempdir())
        output_file = directory / task.spec.get("file", "opus-hello-world.txt")
        output_file.write_text("Hello World!")
        store = key_value_store if key_value_store is not None else KeyValueStore()
        store.save(key="hello_world_file", value=str(output_file))
        return store
