"""A small deployment pipeline: dependencies by name and by label, contexts,
values passed with ${KEY}, and a flaky task that succeeds on a retry.

    python examples/pipeline.py [--context dev|prod] [--runner NAME]

This builds the graph in Python; examples/pipeline/opus.toml declares the same
one for `opus run`.

The graph (arrows point at dependencies)::

    network <- database (tier=data) <-+
            <- cache    (tier=data) <-+- web <- smoke-test (flaky, retried)
    debug-tools (dev only)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "pipeline"))

from pipeline_processors import Provision, SmokeTest

from opus_core import Task, Tasks


def build(runner: str | None = None) -> Tasks:
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
        {"url": "${url}"},
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
    args = parser.parse_args(argv)
    tasks = build(args.runner)
    report = tasks.process_context(command="apply", context=args.context)
    for result in report:
        print(f"{result.task_id:<12} {result.status:<10} attempts={result.attempts}")
    print(f"smoke test: {tasks.key_value_store.store.get('smoke_test')}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
