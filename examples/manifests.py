"""Tasks from YAML manifests, and an in-process plugin that changes the plan.

    python examples/manifests.py [--slow] [--context NAME]

examples/manifests/opus.toml lists `*.yaml` in `[opus] manifests`, so
opus-plugin-yaml's `opus_load_tasks` reads deploy.yaml (one task per document).
`SkipSlow`, registered with `Tasks.from_config(..., plugins=[...])`, implements
`opus_modify_tasks` — as pytest's `pytest_collection_modifyitems` deselects
tests — and leaves out every task labelled `speed: slow` unless `--slow` (or
`$RUN_SLOW=1`) asks for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from opus_core import Task, Tasks, hookimpl

CONFIG = Path(__file__).resolve().parent / "manifests" / "opus.toml"


class SkipSlow:
    """A plugin object: leaves out tasks labelled `speed: slow` unless `slow` is True."""

    def __init__(self, slow: bool = False) -> None:
        self.slow = slow

    @hookimpl
    def opus_modify_tasks(self, tasks: list[Task], command: str, context: str) -> None:
        if self.slow:
            return
        dropped = [t.name for t in tasks if t.meta.labels.get("speed") == "slow"]
        tasks[:] = [t for t in tasks if t.meta.labels.get("speed") != "slow"]
        if dropped:
            print(f"left out (slow; --slow runs them): {', '.join(map(str, dropped))}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="run the slow tasks too")
    parser.add_argument("--context", default="default")
    args = parser.parse_args(argv)
    slow = args.slow or os.environ.get("RUN_SLOW", "") not in ("", "0")
    tasks = Tasks.from_config(CONFIG, plugins=[SkipSlow(slow)])
    report = tasks.process_context(command="apply", context=args.context)
    for result in report:
        print(f"{result.task_id:<12} {result.status:<10} attempts={result.attempts}")
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
