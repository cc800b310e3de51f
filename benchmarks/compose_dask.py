"""Function tasks that feed each other on dask: a diamond lattice, against bare Dask futures.

    .venv/bin/python benchmarks/compose_dask.py [--quick] [--repeat N]

A lattice of `layers` x `width` tasks, each node taking two nodes of the layer
before it as inputs (node i of layer k takes nodes i and i+1, wrapping round),
is built twice on one `LocalCluster` in the same run: with `@task` calls that
pass runs (opus hands Dask the runs' futures, so the values go from worker to
worker) and with `client.submit` calls that pass futures. Both fetch only the
last layer's values. The table gives the median of several rounds, timed in
turns, and the ratio (issue 16's target: at most 1.2x).

`measure(quick)` is what `benchmarks/bench.py` calls for its row.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.2


def join(a: int, b: int) -> int:
    """A lattice node: cheap, so what is timed is the scheduling."""
    return (a + b) % 1_000_003


@dataclass(frozen=True, slots=True)
class Measurement:
    """Median seconds of each side for one lattice size."""

    tasks: int
    opus: float
    bare: float

    @property
    def ratio(self) -> float:
        """opus over bare Dask futures."""
        return self.opus / self.bare


def measure(quick: bool = False, repeat: int | None = None) -> Measurement:
    """Build and run the lattice both ways on one LocalCluster, in turns; medians."""
    from distributed import wait
    from opus_plugin_dask import DaskRunner

    from opus_core import RunList, task

    layers, width = (16, 25) if quick else (40, 50)
    rounds = repeat or (3 if quick else 7)
    runner = DaskRunner(n_workers=2, threads_per_worker=2)
    runner.start()
    client = runner.client
    node = task(runner=runner)(join)

    def bare() -> list[int]:
        layer = [client.submit(join, i, 0, pure=False) for i in range(width)]
        for _ in range(layers - 1):
            layer = [
                client.submit(join, layer[i], layer[(i + 1) % width], pure=False)
                for i in range(width)
            ]
        return list(client.gather(layer))

    def ours() -> list[int]:
        layer = [node(i, 0) for i in range(width)]
        for _ in range(layers - 1):
            layer = [node(layer[i], layer[(i + 1) % width]) for i in range(width)]
        return RunList(layer).get_results()  # the last layer's values in one round trip

    try:
        expected = bare()  # warms the cluster up, and says what both must give
        assert ours() == expected
        client.run(gc.collect)
        times: dict[str, list[float]] = {"bare": [], "opus": []}
        for _ in range(rounds):
            for name, fn in (("bare", bare), ("opus", ours)):
                gc.collect()
                start = time.perf_counter()
                assert fn() == expected
                times[name].append(time.perf_counter() - start)
                wait(client.futures)  # nothing left running into the next measurement
    finally:
        runner.shutdown()
    return Measurement(
        layers * width, statistics.median(times["opus"]), statistics.median(times["bare"])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 400-task lattice, 3 rounds")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 7; 3 quick)")
    args = parser.parse_args()
    result = measure(args.quick, args.repeat)
    print(f"{'benchmark':<44} {'opus':>10} {'client.submit':>14} {'ratio':>7}  target")
    print(
        f"{f'diamond lattice on dask, {result.tasks:,} tasks':<44} "
        f"{result.opus:>9.3f}s {result.bare:>13.3f}s {result.ratio:>7.2f}  "
        f"<= {TARGET}x {'yes' if result.ratio <= TARGET else 'NO'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
