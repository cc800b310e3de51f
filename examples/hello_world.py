"""Hello world: one task whose processor writes "Hello World!" to a file.

python examples/hello_world.py [FILE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from opus_core import KeyValueStore, LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks


class HelloWorldTaskProcessor(TaskProcessor):
    """Writes "Hello World!" to `spec.file` and publishes the path as `hello_world_file`."""

    def __init__(self, logger: LoggerWrapper | None = None) -> None:
        super().__init__(
            kind="HelloWorld", kind_versions=["v1"], supported_commands=["apply"], logger=logger
        )

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> KeyValueStore:
        output_file = Path(task.spec["file"])
        output_file.write_text("Hello World!")
        store = key_value_store if key_value_store is not None else KeyValueStore()
        store.save(key="hello_world_file", value=str(output_file))
        return store


def main(argv: list[str]) -> int:
    target = argv[0] if argv else str(Path(tempfile.gettempdir()) / "opus-hello-world.txt")
    values = KeyValueStore()
    logger = LoggerWrapper()
    tasks = Tasks(key_value_store=values, logger=logger)
    tasks.register_task_processor(processor=HelloWorldTaskProcessor(logger=logger))
    tasks.add_task(task=Task(kind="HelloWorld", version="v1", spec={"file": target}))
    report = tasks.process_context(command="apply", context="ANY")
    report.raise_on_failure()
    written = tasks.key_value_store.store["hello_world_file"]
    logger.info(message=f'File written to "{written}": {Path(written).read_text()}')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
