"""Function tasks on the `ray` runner against the same work with `ray.remote` by hand.

    .venv/bin/python benchmarks/ray_overhead.py [--quick] [--repeat N]

On one local Ray (2 CPUs, started by the runner), in the same run, in turns:

* **no-op**: `tasks` calls of a no-op `@task(runner=ray)` function, then every value
  (`RunList(...).get_results()`), against `tasks` calls of the same function as a
  `ray.remote` and one `ray.get` of them all;
* **lattice**: a diamond lattice of `layers` x `width` tasks, each node taking two
  nodes of the layer before (node i of layer k takes nodes i and i+1, wrapping round),
  built with `@task` calls that pass runs (the runner hands Ray their values'
  `ObjectRef`s) against `.remote` calls that pass `ObjectRef`s; both fetch only the
  last layer's values.

The table gives the median of several rounds and the ratio (issue 29's target: at most
1.2x). `measure(quick)` returns the measurements.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass

TARGET = 1.2


def noop(i: int) -> int:
    """A task that does nothing but return: what is timed is the scheduling."""
    return i


def join(a: int, b: int) -> int:
    """A lattice node: cheap, so what is timed is the scheduling."""
    return (a + b) % 1_000_003


@dataclass(frozen=True, slots=True)
class Measurement:
    """Median seconds of each side for one workload."""

    name: str
    tasks: int
    opus: float
    bare: float

    @property
    def ratio(self) -> float:
        """opus over `ray.remote` by hand."""
        return self.opus / self.bare


def measure(quick: bool = False, repeat: int | None = None) -> list[Measurement]:
    """Both workloads, both ways, on one local Ray, in turns; medians."""
    import ray
    from opus_plugin_ray import RayRunner

    from opus_core import RunList, task

    count = 500 if quick else 2000
    layers, width = (10, 50) if quick else (40, 50)
    rounds = repeat or (3 if quick else 7)
    runner = RayRunner(num_cpus=2)
    runner.start()
    opus_noop, opus_join = task(runner=runner)(noop), task(runner=runner)(join)
    bare_noop, bare_join = ray.remote(noop), ray.remote(join)

    def bare_noops() -> list[int]:
        return ray.get([bare_noop.remote(i) for i in range(count)])

    def opus_noops() -> list[int]:
        return RunList([opus_noop(i) for i in range(count)]).get_results()

    def bare_lattice() -> list[int]:
        layer = [bare_join.remote(i, 0) for i in range(width)]
        for _ in range(layers - 1):
            layer = [bare_join.remote(layer[i], layer[(i + 1) % width]) for i in range(width)]
        return ray.get(layer)

    def opus_lattice() -> list[int]:
        layer = [opus_join(i, 0) for i in range(width)]
        for _ in range(layers - 1):
            layer = [opus_join(layer[i], layer[(i + 1) % width]) for i in range(width)]
        return RunList(layer).get_results()

    workloads = {
        f"{count:,} no-op function tasks": (count, bare_noops, opus_noops),
        f"diamond lattice, {layers * width:,} tasks": (layers * width, bare_lattice, opus_lattice),
    }
    results = []
    try:
        for name, (tasks, bare, ours) in workloads.items():
            expected = bare()  # warms up, and says what both must give
            assert ours() == expected
            times: dict[str, list[float]] = {"bare": [], "opus": []}
            for _ in range(rounds):
                for side, fn in (("bare", bare), ("opus", ours)):
                    gc.collect()
                    start = time.perf_counter()
                    assert fn() == expected
                    times[side].append(time.perf_counter() - start)
            results.append(
                Measurement(
                    name, tasks, statistics.median(times["opus"]), statistics.median(times["bare"])
                )
            )
    finally:
        runner.shutdown()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 tasks, 3 rounds")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 7; 3 quick)")
    args = parser.parse_args()
    header = f"{'benchmark (ray, local, 2 CPUs)':<40} {'opus':>9} {'ray.remote':>11} {'ratio':>7}"
    print(f"{header}  target")
    for result in measure(args.quick, args.repeat):
        print(
            f"{result.name:<40} {result.opus:>8.3f}s {result.bare:>10.3f}s {result.ratio:>7.2f}  "
            f"<= {TARGET}x {'yes' if result.ratio <= TARGET else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
