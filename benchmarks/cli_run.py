"""What a user's `opus run` of a 10,000-task `opus.toml` costs, as a whole process.

    .venv/bin/python benchmarks/cli_run.py [--tasks 10000] [--rounds 11]

opus-core and its plugins are installed as users get them (not editable, byte-compiled
by pip: `bench.py`'s start-up environment). The project is generated: one processor
module with a no-op processor, and `opus.toml` with N tasks, each `kind`, `version`,
`metadata.name` and a one-key `spec`.

The baseline is what a user would write by hand for the same work: parse the same
`opus.toml` with `tomllib`, build the same `Task`s, call the processor in a loop
(and, against opus's default `sqlite` persistence, insert or replace and commit a row
per task in a bare `sqlite3` database kept in the project between runs, as opus keeps
its state, WAL and synchronous NORMAL as opus sets them). opus and the
baseline run in turns (one of each per round, interleaved) with their output on a pipe
that is read, and on a pseudo-terminal; the table gives medians and the median of the
per-round ratios. Targets: 1.4x or less.

opus parses `opus.toml` with `tomli` (compiled), the library `tomllib` was taken from; the
baseline as a user writes it uses the standard `tomllib`. The last column is the ratio
against the same baseline parsing with `tomli`: what opus costs beyond the parse. The
second table says where opus's time goes, from one `opus run` timed in-process, phase
by phase.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import startup_environment  # the environment opus is installed in as users get it

PROCESSOR = """
from opus_core import TaskProcessor


class Noop(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        return {}
"""

BASELINE = """
import json, sqlite3, sys, time
sys.path.insert(0, ".")
tomllib = __import__(sys.argv[2])  # tomllib as a user writes it, or tomli as opus parses
from opus_core import KeyValueStore, StatePersistence, Task
from noop import Noop

with open("opus.toml", "rb") as f:
    config = tomllib.load(f)
processor = Noop()
persistence = StatePersistence()
tasks = [
    Task(t["kind"], t["version"], metadata=t["metadata"], spec=t["spec"]) for t in config["tasks"]
]
if sys.argv[1] == "sqlite":
    db = sqlite3.connect("bare-state.db")  # kept between runs, as opus keeps its state
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, status TEXT, "
               "started REAL, ended REAL, result TEXT)")
    for task in tasks:
        started = time.time()
        result = processor.process_task(task, "apply", "default", KeyValueStore(), persistence)
        db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                   (task.metadata["name"], "succeeded", started, time.time(), json.dumps(result)))
        db.commit()
else:
    for task in tasks:
        processor.process_task(task, "apply", "default", KeyValueStore(), persistence)
print(f"{len(tasks)} succeeded")
"""

PHASES = """
import functools, os, sys, time
t0 = time.perf_counter()
import opus_core.cli.run as run
import opus_core.config as config
import opus_core.engine as engine
import opus_core.records as records
from opus_core.cli import context, main, output
spent = {}

def timed(owner, name, label):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)

timed(config, "read_toml", "parse opus.toml (tomli and the depth check)")
timed(context.CommandContext, "tasks", "build the engine and the 10,000 Tasks")
timed(engine.Tasks, "process_context", "run: plan, schedule, hooks, log lines (all but below)")
timed(records.RunRecords, "save", "  of which the task records, each saved as its task ends")
timed(engine.Tasks, "_save_run", "  of which the run history, at the start and at the end")
timed(output, "report_table", "results table")
run.exit_leaving_threads = lambda status: None
t1 = time.perf_counter()
sys.argv = ["opus", "run"]
try:
    main()
except SystemExit:
    pass
end = time.perf_counter()
sys.stdout.flush()
rest = end - t1 - sum(v for k, v in spent.items() if not k.startswith("  "))
run_label = "run: plan, schedule, hooks, log lines (all but below)"
spent[run_label] -= sum(v for k, v in spent.items() if k.startswith("  "))
lines = [("import opus_core.cli", t1 - t0), *spent.items(), ("the rest of main()", rest)]
text = "".join(f"{label}\\t{seconds}\\n" for label, seconds in lines)
os.write(int(os.environ["PHASES_FD"]), text.encode())
"""


def project(root: Path, tasks: int, persistence: str) -> Path:
    root.mkdir(parents=True)
    (root / "noop.py").write_text(PROCESSOR)
    (root / "baseline.py").write_text(BASELINE)
    (root / "phases.py").write_text(PHASES)
    head = f'[opus]\nrunner = "sequential"\npersistence = "{persistence}"\n'
    head += 'processors = ["noop:Noop"]\n'
    body = "".join(
        f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "t{i}" }}\n'
        f"spec = {{ i = {i} }}\n"
        for i in range(tasks)
    )
    (root / "opus.toml").write_text(head + body)
    return root


def drain(fd: int) -> threading.Thread:
    def read() -> None:
        try:
            while os.read(fd, 65536):
                pass
        except OSError:  # a pty's reader gets EIO once the writer is gone
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def timed_run(command: list[str], cwd: Path, env: dict[str, str], on_pty: bool) -> float:
    """Seconds from start to exit of `command`, its output read from a pipe or a pty."""
    reader_fd, writer_fd = pty.openpty() if on_pty else os.pipe()
    reader = drain(reader_fd)
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=writer_fd, stderr=writer_fd
    )
    os.close(writer_fd)
    status = process.wait()
    seconds = time.perf_counter() - start
    reader.join()
    os.close(reader_fd)
    if status not in (0,):
        raise SystemExit(f"{command} exited {status} in {cwd}")
    return seconds


def compare(
    python: Path, root: Path, persistence: str, on_pty: bool, rounds: int
) -> tuple[float, float, float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_STATE_HOME"] = str(root / "state")
    env["XDG_CONFIG_HOME"] = str(root / "config")
    opus = [str(python.parent / "opus"), "run"]
    baseline = [str(python), "baseline.py", persistence, "tomllib"]
    same_parser = [str(python), "baseline.py", persistence, "tomli"]
    ours, theirs, ratios, parser_ratios = [], [], [], []
    for index in range(rounds + 1):  # the first round warms the caches and is not counted
        a = timed_run(opus, root, env, on_pty)
        b = timed_run(baseline, root, env, on_pty)
        c = timed_run(same_parser, root, env, on_pty)
        if index:
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
            parser_ratios.append(a / c)
    return (
        statistics.median(ours),
        statistics.median(theirs),
        statistics.median(ratios),
        statistics.median(parser_ratios),
    )


def phases(python: Path, root: Path) -> list[tuple[str, float]]:
    """Where one `opus run` (output on a pipe) spends its time, phase by phase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_STATE_HOME"] = str(root / "state")
    env["XDG_CONFIG_HOME"] = str(root / "config")
    best: dict[str, float] = {}
    for _ in range(5):
        reader, writer = os.pipe()
        process = subprocess.Popen(
            [str(python), "phases.py"],
            cwd=root,
            env={**env, "PHASES_FD": str(writer)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(writer,),
        )
        os.close(writer)
        with os.fdopen(reader) as report:
            text = report.read()
        process.wait()
        for line in text.splitlines():
            label, seconds = line.split("\t")
            best[label] = min(best.get(label, float("inf")), float(seconds))
    return list(best.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    python = startup_environment()
    print(f"opus run of a {args.tasks:,}-task opus.toml, whole process, {args.rounds} rounds")
    print(
        f"{'persistence':<12} {'output':<7} {'opus':>9} {'baseline':>9} {'ratio':>6}  "
        f"{'target':<11} {'same parser':>11}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for persistence in ("memory", "sqlite"):
            root = project(Path(folder) / persistence, args.tasks, persistence)
            for on_pty in (False, True):
                ours, theirs, ratio, same = compare(python, root, persistence, on_pty, args.rounds)
                shown = "pty" if on_pty else "pipe"
                met = "yes" if ratio <= 1.4 else "NO"
                print(
                    f"{persistence:<12} {shown:<7} {ours:>8.3f}s {theirs:>8.3f}s {ratio:>6.2f}  "
                    f"<= 1.4 {met:<4} {same:>11.2f}"
                )
        for persistence in ("memory", "sqlite"):
            print(f"\nwhere one `opus run` ({persistence}, on a pipe) spends its time (best of 5):")
            for label, seconds in phases(python, Path(folder) / persistence):
                print(f"  {seconds * 1000:8.1f} ms  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
