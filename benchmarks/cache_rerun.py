"""A no-op re-run of an up-to-date N-task project of shell steps over files: opus's file
cache against make and doit, as whole processes.

    .venv/bin/python benchmarks/cache_rerun.py [--tasks 1000] [--rounds 7]

The tree: N source files `src/sI.txt`; task I reads its source and, but for the first
of each chain of 10, the output of the task before it, and writes `build/tI.txt` with
`cat`. The same tree is built three ways, each in a copy of its own: an `opus.toml` of
`Command` tasks with `inputs` and `outputs` (opus installed as users get it: not
editable, byte-compiled; default logging and the default `sqlite` persistence), a
`Makefile` (GNU make), and a `dodo.py` of doit 0.37 tasks with `file_dep` and
`targets`. Each is built once; then, in interleaved rounds, each is asked again with
everything up to date: `opus run`, `make` and `make -q`, `doit`. The table gives the
medians and the median of the per-round ratios (targets: opus at most doit's time and
at most 3x make's), and the cost per task of the check: the same measured at N and at
N/10 tasks, the difference divided by the tasks between.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import startup_environment  # the environment opus is installed in as users get it

CHAIN = 10


def deps(i: int) -> list[int]:
    return [] if i % CHAIN == 0 else [i - 1]


def tree(root: Path, tasks: int) -> None:
    (root / "src").mkdir(parents=True)
    (root / "build").mkdir()
    for i in range(tasks):
        (root / "src" / f"s{i}.txt").write_text(f"source {i}\n")


def inputs(i: int) -> list[str]:
    return [f"src/s{i}.txt", *(f"build/t{d}.txt" for d in deps(i))]


def opus_project(root: Path, tasks: int) -> None:
    parts = []
    for i in range(tasks):
        files = inputs(i)
        after = "".join(f', dependencies = ["t{d}"]' for d in deps(i))
        parts.append(
            f'[[tasks]]\nkind = "Command"\nversion = "v1"\n'
            f'metadata = {{ name = "t{i}"{after}, inputs = {files!r}, '
            f'outputs = ["build/t{i}.txt"] }}\n'.replace("'", '"')
            + f'spec = {{ run = "cat {" ".join(files)} > build/t{i}.txt" }}\n'
        )
    (root / "opus.toml").write_text("".join(parts))


def makefile(root: Path, tasks: int) -> None:
    targets = " ".join(f"build/t{i}.txt" for i in range(tasks))
    rules = [f"all: {targets}\n"]
    for i in range(tasks):
        files = " ".join(inputs(i))
        rules.append(f"build/t{i}.txt: {files}\n\tcat {files} > $@\n")
    (root / "Makefile").write_text("".join(rules))


def dodo(root: Path, tasks: int) -> None:
    (root / "dodo.py").write_text(
        f"""
CHAIN, TASKS = {CHAIN}, {tasks}
DOIT_CONFIG = {{"verbosity": 0}}


def inputs(i):
    return [f"src/s{{i}}.txt"] + ([] if i % CHAIN == 0 else [f"build/t{{i - 1}}.txt"])


def task_build():
    for i in range(TASKS):
        files = inputs(i)
        yield {{
            "name": f"t{{i}}",
            "file_dep": files,
            "targets": [f"build/t{{i}}.txt"],
            "actions": [f"cat {{' '.join(files)}} > build/t{{i}}.txt"],
        }}
"""
    )


def seconds(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    spent = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} in {cwd} exited {done.returncode}: {done.stderr[-2000:]}")
    return spent


def measure(python: Path, tasks: int, rounds: int) -> dict[str, list[float]]:
    bin_dir = python.parent
    commands = {
        "opus run": [str(bin_dir / "opus"), "run"],
        "make": ["make", "--no-print-directory"],
        "make -q": ["make", "-q"],
        "doit": [str(bin_dir / "doit")],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as folder:
        roots = {}
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": folder, "LANG": "C.UTF-8"}
        env["XDG_STATE_HOME"] = f"{folder}/state"
        env["XDG_CONFIG_HOME"] = f"{folder}/config"
        for name, write in (("opus", opus_project), ("make", makefile), ("doit", dodo)):
            root = roots[name] = Path(folder) / name
            tree(root, tasks)
            write(root, tasks)
        seconds(commands["opus run"], roots["opus"], env)  # the first build of each
        seconds(commands["make"], roots["make"], env)
        seconds(commands["doit"], roots["doit"], env)
        again = subprocess.run(
            [*commands["opus run"], "--json"], cwd=roots["opus"], env=env, capture_output=True
        )
        statuses = {task["status"] for task in json.loads(again.stdout)["tasks"]}
        assert statuses == {"restored"}, statuses  # everything up to date
        for index in range(rounds + 1):  # the first round warms the caches, uncounted
            for name, command in commands.items():
                spent = seconds(command, roots[name.split()[0]], env)
                if index:
                    times[name].append(spent)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    python = startup_environment()
    if not (python.parent / "doit").exists():
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "doit==0.37.0"], check=True)
    small = max(args.tasks // 10, CHAIN)
    big_times = measure(python, args.tasks, args.rounds)
    small_times = measure(python, small, args.rounds)
    print(
        f"no-op re-run of an up-to-date {args.tasks:,}-task project, whole process, "
        f"{args.rounds} rounds"
    )
    print(f"{'tool':<9} {'median':>9} {'opus/tool':>10} {'per task':>10}")
    opus = big_times["opus run"]
    for name, spent in big_times.items():
        ratios = [a / b for a, b in zip(opus, spent, strict=True)]
        per_task = (statistics.median(spent) - statistics.median(small_times[name])) / (
            args.tasks - small
        )
        print(
            f"{name:<9} {statistics.median(spent) * 1000:>7.1f}ms "
            f"{statistics.median(ratios):>9.2f}x {per_task * 1e6:>8.1f}us"
        )
    print("targets: opus/doit <= 1.0, opus/make <= 3.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
