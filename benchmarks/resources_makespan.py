"""How close opus's scheduling with resources comes to the best any schedule could do.

    .venv/bin/python benchmarks/resources_makespan.py [--graphs 20] [--seed 7]

Seeded random graphs of sleeping tasks (20-100 ms each, 30-60 tasks, up to three
dependencies each), random capacities of two resources and random needs, run on
`threadpool` with enough threads that only the resources limit what runs at once:
each graph twice, with every priority 0 (the scheduler's own choices) and with random
priorities 0-3 (which the scheduler must honour, whatever they cost). Each run's wall
time is compared with a lower bound no schedule can beat: the longest chain of
durations through the graph, or for each resource the sum over tasks of need x
duration divided by its capacity, whichever is larger. The table gives the ratio per
graph and its median and worst (target: 1.25 or less).

Beside them, simulated without any overhead, what list scheduling (start the first
ready task, in some order, whose needs are free, whenever something ends) reaches on
the same graph: in the engine's order (it does not know durations: the longest chain of
tasks after a task, then the larger share of the capacities), in the order of the
longest chain of *durations* after a task (as if every duration were known), and the
best of 300 random orders. Where even those stay above 1.25, the bound is out of reach
of such a schedule on that graph.
"""

from __future__ import annotations

import argparse
import heapq
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
    """Tasks (with random priorities), capacities, and the lower bound of any schedule's
    length."""
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


def list_schedule(tasks: list[Task], capacities: dict[str, float], order: list[int]) -> float:
    """The length of the list schedule of `tasks` that, whenever a task ends, starts the
    ready tasks whose needs are free, earliest in `order` first (no overhead)."""
    index = {task.meta.name: i for i, task in enumerate(tasks)}
    rank = {i: position for position, i in enumerate(order)}
    dependents: list[list[int]] = [[] for _ in tasks]
    waiting = [0] * len(tasks)
    for i, task in enumerate(tasks):
        for name in task.meta.dependency_names:
            dependents[index[name]].append(i)
            waiting[i] += 1
    free = dict(capacities)
    ready = [i for i in range(len(tasks)) if not waiting[i]]
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        ready.sort(key=rank.__getitem__)
        for i in list(ready):
            needs = tasks[i].meta.resources
            if all(free[r] >= need - 1e-9 for r, need in needs.items()):
                for r, need in needs.items():
                    free[r] -= need
                heapq.heappush(running, (now + tasks[i].spec["seconds"], i))
                ready.remove(i)
        now, i = heapq.heappop(running)
        for r, need in tasks[i].meta.resources.items():
            free[r] += need
        for dependent in dependents[i]:
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
    return now


def simulated(tasks: list[Task], capacities: dict[str, float], seed: int) -> list[float]:
    """List schedules of `tasks` (priorities 0): the engine's order, the order of the
    longest chain of durations after each task, and the best of 300 random orders."""
    after: list[int] = [0] * len(tasks)  # tasks on the longest chain after each
    tail: list[float] = [0.0] * len(tasks)  # seconds on the longest chain from each
    index = {task.meta.name: i for i, task in enumerate(tasks)}
    for i in range(len(tasks) - 1, -1, -1):  # dependents come later in the list
        tail[i] += tasks[i].spec["seconds"]
        for name in tasks[i].meta.dependency_names:
            d = index[name]
            after[d] = max(after[d], after[i] + 1)
            tail[d] = max(tail[d], tail[i])
    share = [sum(need / capacities[r] for r, need in task.meta.resources.items()) for task in tasks]
    every = range(len(tasks))
    engine = sorted(every, key=lambda i: (-after[i], -share[i], i))
    known = sorted(every, key=lambda i: (-tail[i], i))
    rng = random.Random(seed)
    best = min(list_schedule(tasks, capacities, rng.sample(every, len(tasks))) for _ in range(300))
    return [list_schedule(tasks, capacities, engine), list_schedule(tasks, capacities, known), best]


def run(tasks: list[Task], capacities: dict[str, float]) -> float:
    """Seconds `tasks` take on `threadpool` (64 threads) with `capacities`."""
    engine = Tasks(runner="threadpool", runner_options={"max_workers": 64}, resources=capacities)
    engine.logger.level = 30  # warnings only: the table is the output
    engine.register_task_processor(Sleep())
    for task in tasks:
        engine.add_task(task)
    start = time.perf_counter()
    report = engine.process_context()
    spent = time.perf_counter() - start
    assert report.ok, report.summary()
    return spent


def without_priorities(tasks: list[Task]) -> list[Task]:
    """The same tasks, every priority 0."""
    return [
        Task(t.kind, t.version, metadata={**t.metadata, "priority": 0}, spec=t.spec) for t in tasks
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    columns = [
        "priorities 0",
        "random priorities",
        "engine's order",
        "durations known",
        "best of 300",
    ]
    ratios: dict[str, list[float]] = {column: [] for column in columns}
    print("ratio to the lower bound: runs on threadpool, then list schedules simulated")
    print(f"{'graph':>5} {'tasks':>5} {'bound':>7} " + " ".join(f"{c:>17}" for c in columns))
    for number in range(args.graphs):
        tasks, capacities, bound = random_graph(rng)
        plain = without_priorities(tasks)
        seconds = [run(plain, capacities), run(tasks, capacities)]
        seconds += simulated(plain, capacities, number)
        for column, spent in zip(columns, seconds, strict=True):
            ratios[column].append(spent / bound)
        row = " ".join(f"{spent / bound:>17.2f}" for spent in seconds)
        print(f"{number:>5} {len(tasks):>5} {bound:>6.3f}s {row}")
    print(f"{'median':>19} " + " ".join(f"{statistics.median(r):>17.2f}" for r in ratios.values()))
    print(f"{'worst':>19} " + " ".join(f"{max(r):>17.2f}" for r in ratios.values()))
    for column in columns[:2]:
        over = [f"{r:.2f}" for r in ratios[column] if r > 1.25]
        met = "yes" if not over else f"NO on {len(over)} of {args.graphs} ({', '.join(over)})"
        print(f"{column}: target 1.25 or less: {met}")
    out_of_reach = sum(min(r) > 1.25 for r in zip(*(ratios[c] for c in columns[2:]), strict=True))
    print(f"graphs where no simulated list schedule comes within 1.25: {out_of_reach}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
