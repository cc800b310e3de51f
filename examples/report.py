"""A run you can look at: a small data pipeline on four threads, written as an HTML report.

    python examples/report.py [-o report.html] [--runner NAME]

Three sources are fetched and cleaned side by side, joined, and a model is
trained on them; training fails on its first attempt and succeeds on the
retry. Publishing the docs fails for good, so the announcement that needs them
is skipped. The report (open it in a browser) shows the graph coloured by
status, each attempt on the timeline, and the error of `publish-docs` on click.

From the command line the same is `opus run --report report.html`, or
`opus report -o report.html` for the latest run in the history.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from opus_core import KeyValueStore, LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks
from opus_core.history import find_run
from opus_core.html_report import write_report


class Step(TaskProcessor):
    """Sleeps `spec.seconds`; fails while the attempt number is at most `spec.fail_attempts`,
    or always when `spec.fail` is given."""

    kind = "Step"

    def __init__(self) -> None:
        super().__init__(logger=LoggerWrapper("WARNING"))
        self.tries: dict[str, int] = {}

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        attempt = self.tries[task.task_id] = self.tries.get(task.task_id, 0) + 1
        time.sleep(task.spec.get("seconds", 0.05))
        if attempt <= task.spec.get("fail_attempts", 0):
            raise ConnectionError(f"{task.task_id}: worker lost on attempt {attempt}")
        if "fail" in task.spec:
            raise PermissionError(task.spec["fail"])
        return {f"{task.task_id}.done": True}


STEPS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("fetch-orders", [], {"seconds": 0.30}),
    ("fetch-customers", [], {"seconds": 0.20}),
    ("fetch-products", [], {"seconds": 0.12}),
    ("clean-orders", ["fetch-orders"], {"seconds": 0.15}),
    ("clean-customers", ["fetch-customers"], {"seconds": 0.22}),
    ("clean-products", ["fetch-products"], {"seconds": 0.10}),
    ("join", ["clean-orders", "clean-customers", "clean-products"], {"seconds": 0.12}),
    ("train", ["join"], {"seconds": 0.10, "fail_attempts": 1}),
    ("evaluate", ["train"], {"seconds": 0.08}),
    ("build-docs", ["join"], {"seconds": 0.06}),
    ("publish-docs", ["build-docs"], {"seconds": 0.05, "fail": "403 Forbidden: docs bucket"}),
    ("announce", ["evaluate", "publish-docs"], {"seconds": 0.02}),
]


def build(runner: str = "threadpool") -> Tasks:
    """The pipeline's engine: twelve steps on `runner` (four workers when it takes them)."""
    options = {"max_workers": 4} if runner in ("threadpool", "process") else {}
    tasks = Tasks(logger=LoggerWrapper("WARNING"), runner=runner, runner_options=options)
    tasks.register_task_processor(Step())
    for name, dependencies, spec in STEPS:
        metadata: dict[str, Any] = {"name": name, "dependencies": dependencies}
        if spec.get("fail_attempts"):
            metadata.update(retries=2, retry_sleep_time=0.05)
        tasks.add_task(Task(kind="Step", version="v1", metadata=metadata, spec=spec))
    return tasks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    parser.add_argument("--runner", default="threadpool", help="the runner (default threadpool)")
    args = parser.parse_args(argv)
    tasks = build(args.runner)
    report = tasks.process_context("apply", "default")
    print(report.summary())
    # Every run is in the history of the engine's persistence, even the in-memory one.
    run = find_run(tasks.state_persistence, report.run_id or "latest")
    path = write_report(run, args.output)
    print(f"report written to {Path(path).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
