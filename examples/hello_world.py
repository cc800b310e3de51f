"""Hello world in Python: one task whose processor writes "Hello World!" to a file.

    python examples/hello_world.py [FILE]

The same job declared in TOML is examples/hello_world/opus.toml.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "hello_world"))

from hello_processor import HelloWorldTaskProcessor

from opus_core import KeyValueStore, LoggerWrapper, Task, Tasks


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
