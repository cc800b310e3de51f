"""How close opus's scheduling with resources comes to the best any schedule could do.

    .venv/bin/python benchmarks/resources_makespan.py [--graphs 20] [--seed 7]

Seeded random graphs of sleeping tasks (20-100 ms each, 30-60 tasks, up to three
dependencies each), random capacities of two resources and random needs, and random
priorities, run on `threadpool` with enough threads that only the resources limit
what runs at once. Each run's wall time is compared with a lower bound no schedule can
beat: the longest chain of durations through the graph, or for each resource the sum
over tasks of need x duration divided by its capacity, whichever is larger. The table
gives the ratio per graph and its median and worst (target: 1.25 or less).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

from opus_core import Task, TaskProcessor, Tasks


class Sleep(TaskProcessor):
    kind = "Sleep"

    def process_task(
        self, task: Task, command: str, context: str, key_value_store: Any, state_persistence: Any
    ) -> dict[str, Any]:
        time.sleep(task.spec["seconds"])
        return {}


def random_graph(rng: random.Random) -> tuple[list[Task], dict[str, float], float]:
    """Tasks, capacities, and the lower bound of any schedule's length."""
    capacities = {"db": float(rng.randint(1, 4)), "gpu": float(rng.randint(1, 3))}
    tasks: list[Task] = []
    durations: dict[str, float] = {}
    deps: dict[str, list[str]] = {}
    load = dict.fromkeys(capacities, 0.0)
    for i in range(rng.randint(30, 60)):
        name = f"t{i}"
        earlier = list(durations)
        deps[name] = rng.sample(earlier, min(len(earlier), rng.choice([0, 0, 1, 1, 2, 3])))
        needs = {
            r: float(rng.randint(1, int(c))) for r, c in capacities.items() if rng.random() < 0.6
        }
        seconds = rng.uniform(0.02, 0.1)
        durations[name] = seconds
        for resource, need in needs.items():
            load[resource] += need * seconds
        metadata = {
            "name": name,
            "dependencies": deps[name],
            "resources": needs,
            "priority": rng.randint(0, 3),
        }
        tasks.append(Task("Sleep", "v1", metadata=metadata, spec={"seconds": seconds}))
    finish: dict[str, float] = {}
    for name, seconds in durations.items():  # in dependency order
        finish[name] = seconds + max((finish[d] for d in deps[name]), default=0.0)
    bound = max(max(finish.values()), *(load[r] / c for r, c in capacities.items()))
    return tasks, capacities, bound


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ratios = []
    print(f"{'graph':>5} {'tasks':>5} {'bound':>8} {'opus':>8} {'ratio':>6}")
    for number in range(args.graphs):
        tasks, capacities, bound = random_graph(rng)
        engine = Tasks(
            runner="threadpool", runner_options={"max_workers": 64}, resources=capacities
        )
        engine.logger.level = 30  # warnings only: the table is the output
        engine.register_task_processor(Sleep())
        for task in tasks:
            engine.add_task(task)
        start = time.perf_counter()
        report = engine.process_context()
        spent = time.perf_counter() - start
        assert report.ok, report.summary()
        ratios.append(spent / bound)
        print(f"{number:>5} {len(tasks):>5} {bound:>7.3f}s {spent:>7.3f}s {spent / bound:>6.2f}")
    median, worst = statistics.median(ratios), max(ratios)
    met = "yes" if worst <= 1.25 else "NO"
    print(f"median {median:.2f}, worst {worst:.2f} (target: 1.25 or less: {met})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
