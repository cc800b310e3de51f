"""A small deployment pipeline: dependencies by name and by label, contexts,
values passed with ${KEY}, and a flaky task that succeeds on a retry.

    python examples/pipeline.py [--context dev|prod] [--runner NAME] [--workdir DIR]

The graph (arrows point at dependencies)::

    network <- database (tier=data) <-+
            <- cache    (tier=data) <-+- web <- smoke-test (flaky, retried)
    debug-tools (dev only)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from opus_core import KeyValueStore, StatePersistence, Task, TaskProcessor, Tasks


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
    """Fails the first time it runs in `spec.workdir` (a flaky check), then passes."""

    kind = "SmokeTest"

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        marker = Path(task.spec["workdir"]) / "smoke-test-attempted"
        if not marker.exists():
            marker.touch()
            raise ConnectionError(f"{task.spec['url']} did not answer (first attempt)")
        return {"smoke_test": f"{task.spec['url']} answered"}


def build(workdir: str, runner: str | None = None) -> Tasks:
    """The pipeline's engine, ready to run."""
    tasks = Tasks(runner=runner)
    tasks.register_task_processor(Provision())
    tasks.register_task_processor(SmokeTest())

    def add(kind: str, metadata: dict[str, Any], spec: dict[str, Any]) -> None:
        tasks.add_task(Task(kind=kind, version="v1", metadata=metadata, spec=spec))

    add(
        "Provision",
        {"name": "network"},
        {"message": "network ready", "publish": {"network_id": "net-42"}},
    )
    add(
        "Provision",
        {"name": "database", "labels": {"tier": "data"}, "dependencies": ["network"]},
        {"message": "database on ${network_id}", "publish": {"db_address": "db.internal:5432"}},
    )
    add(
        "Provision",
        {"name": "cache", "labels": {"tier": "data"}, "dependencies": ["network"]},
        {"message": "cache on ${network_id}", "publish": {"cache_address": "cache.internal:6379"}},
    )
    add(
        "Provision",
        {
            "name": "web",
            "dependencies": [{"labels": {"tier": "data"}}],
            "contexts": ["dev", "prod"],
        },
        {
            "message": "web using ${db_address} and ${cache_address}",
            "publish": {"url": "http://web.internal"},
        },
    )
    add(
        "SmokeTest",
        {"name": "smoke-test", "dependencies": ["web"], "retries": 2, "retry_sleep_time": 0.2},
        {"url": "${url}", "workdir": workdir},
    )
    add(
        "Provision",
        {"name": "debug-tools", "contexts": ["dev"]},
        {"message": "debug tools installed"},
    )
    return tasks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", default="dev")
    parser.add_argument("--runner", default="process", help="runner to use (default: process)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        tasks = build(args.workdir or scratch, args.runner)
        report = tasks.process_context(command="apply", context=args.context)
    for result in report:
        print(f"{result.task_id:<12} {result.status:<10} attempts={result.attempts}")
    print(f"smoke test: {tasks.key_value_store.store.get('smoke_test')}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
