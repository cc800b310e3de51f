"""opus against doit, Luigi and Dask on the same 10,000-task graphs, each in its own process.

    .venv/bin/python benchmarks/peers.py [--tasks 10000] [--rounds 5]

Two graphs of no-op tasks: 10,000 independent tasks, and 1,000 chains of 10 (each task
after the one before it). Each tool is given the graph as its users write one, builds
it and runs it on one thread, in a process of its own; the process times its own
build and run (not the interpreter's start or its imports) and prints the seconds:

* opus: `Task`s added to `Tasks`, `process_context()` on `sequential`, logging off;
* doit 0.37.0: a `task_*` generator of Python actions with `task_dep`, run by
  `DoitMain` with the `zero` reporter and its database in a temporary folder;
* Luigi 3.8.1: a `luigi.Task` per task (`requires` the one before it), `luigi.build`
  with the local scheduler and one worker;
* Dask 2026.11.0: `dask.delayed` calls computed with `scheduler="sync"`, and the same
  graph written as a task-graph dict run by `dask.local.get_sync`.

Each peer runs in a virtual environment of its own under `.bench/peers/`, its version
pinned, made on first use (`python3 dev.py bench` makes them). The tools take turns,
one run of each per round; the table gives min, median and max of each, and the median
of opus's time over the peer's. Luigi's scheduler is quadratic in the number of tasks
(a 10,000-task run takes minutes), so it runs once per graph.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".bench" / "peers"

PINS = {"doit": "doit==0.37.0", "luigi": "luigi==3.8.1", "dask": "dask==2026.11.0"}
"""Each peer's environment and the one package pinned in it."""

OPUS = """
import sys, time
from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks

n, chains = int(sys.argv[1]), sys.argv[2] == "chains"


class Noop(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return {}


start = time.perf_counter()
tasks = Tasks(logger=LoggerWrapper("ERROR"))
tasks.register_task_processor(Noop)
for i in range(n):
    metadata = {"name": f"t{i}"}
    if chains and i % 10:
        metadata["dependencies"] = [f"t{i - 1}"]
    tasks.add_task(Task("Noop", "v1", metadata=metadata))
assert tasks.process_context().ok
print(time.perf_counter() - start)
"""

DOIT = """
import os, sys, tempfile, time
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

n, chains = int(sys.argv[1]), sys.argv[2] == "chains"


def noop():
    return True


def task_t():
    for i in range(n):
        yield {
            "name": str(i),
            "actions": [(noop,)],
            "task_dep": [f"t:{i - 1}"] if chains and i % 10 else [],
            "verbosity": 0,
        }


with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    status = DoitMain(ModuleTaskLoader({"task_t": task_t})).run(
        ["--db-file", os.path.join(folder, "doit.db"), "--reporter", "zero"]
    )
    took = time.perf_counter() - start
assert status == 0, status
print(took)
"""

LUIGI = """
import sys, time
import luigi

n, chains = int(sys.argv[1]), sys.argv[2] == "chains"


class Noop(luigi.Task):
    i = luigi.IntParameter()

    def requires(self):
        return [Noop(i=self.i - 1)] if chains and self.i % 10 else []

    def run(self):
        self.finished = True

    def complete(self):
        return getattr(self, "finished", False)


start = time.perf_counter()
ok = luigi.build(
    [Noop(i=i) for i in range(n)],
    local_scheduler=True,
    workers=1,
    log_level="ERROR",
    detailed_summary=False,
)
took = time.perf_counter() - start
assert ok
print(took)
"""

DASK = """
import sys, time
import dask
from dask.local import get_sync

n, chains, how = int(sys.argv[1]), sys.argv[2] == "chains", sys.argv[3]


def noop(*inputs):
    return None


start = time.perf_counter()
if how == "delayed":
    nodes = []
    for i in range(n):
        call = dask.delayed(noop, pure=False)
        nodes.append(call(nodes[-1]) if chains and i % 10 else call())
    dask.compute(*nodes, scheduler="sync")
else:
    graph = {f"t{i}": (noop, f"t{i - 1}") if chains and i % 10 else (noop,) for i in range(n)}
    get_sync(graph, list(graph))
print(time.perf_counter() - start)
"""


def environment(name: str) -> Path:
    """The Python of peer `name`'s own virtual environment, made (and its pin installed)
    on first use."""
    python = PEERS / name / "bin" / "python"
    stamp = PEERS / name / ".installed"
    if stamp.exists() and stamp.read_text() == PINS[name]:
        return python
    venv.create(PEERS / name, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, PINS[name]], check=True)
    stamp.write_text(PINS[name])
    return python


def install() -> None:
    """Every peer's environment (what `python3 dev.py bench` calls before the table)."""
    for name in PINS:
        environment(name)


def contenders() -> dict[str, list[str]]:
    """Each contender's command line, but for the graph's size and shape."""
    scripts = PEERS / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name, text in (("opus", OPUS), ("doit", DOIT), ("luigi", LUIGI), ("dask", DASK)):
        (scripts / f"run_{name}.py").write_text(text)  # not `dask.py`: it would be imported as dask
    return {
        "opus": [sys.executable, str(scripts / "run_opus.py")],
        "doit 0.37.0": [str(environment("doit")), str(scripts / "run_doit.py")],
        "Luigi 3.8.1": [str(environment("luigi")), str(scripts / "run_luigi.py")],
        "Dask delayed, sync": [str(environment("dask")), str(scripts / "run_dask.py")],
        "Dask graph dict, get_sync": [str(environment("dask")), str(scripts / "run_dask.py")],
    }


def seconds(command: list[str]) -> float:
    """The build-and-run seconds `command` prints as its last line."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-800:]}")
    return float(done.stdout.strip().splitlines()[-1])


def compare(n: int, shape: str, rounds: int) -> list[tuple[str, list[float]]]:
    """Every contender's timings on one graph, in turns (Luigi in the first round only)."""
    extra = {"Dask delayed, sync": ["delayed"], "Dask graph dict, get_sync": ["dict"]}
    commands = contenders()
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(rounds):
        for name, command in commands.items():
            if name.startswith("Luigi") and round_:
                continue
            timings[name].append(seconds([*command, str(n), shape, *extra.get(name, [])]))
    return list(timings.items())


def table(
    n: int, rounds: int, report: Callable[[str, str, list[float], list[float]], None]
) -> None:
    """Both graphs; `report(graph, peer, opus timings, peer timings)` for each peer."""
    for shape, label in (("independent", f"{n:,} independent"), ("chains", "chains of 10")):
        results = compare(n, shape, rounds)
        ours = results[0][1]
        for name, theirs in results[1:]:
            report(label, name, ours, theirs)


def spread(values: list[float], scale: float = 1.0, unit: str = "s") -> str:
    """min/median/max of `values` (seconds) times `scale`, in `unit`."""
    low, mid, high = (scale * v for v in (min(values), statistics.median(values), max(values)))
    return f"{low:.3g}/{mid:.3g}/{high:.3g} {unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'graph':<20} {'peer':<26} {'opus min/med/max':>24} {'peer min/med/max':>26}  ratio")

    def report(graph: str, name: str, ours: list[float], theirs: list[float]) -> None:
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"{graph:<20} {name:<26} {spread(ours):>24} {spread(theirs):>26}  {ratio:.3f}")

    table(args.tasks, args.rounds, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
