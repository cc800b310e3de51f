"""How many processes that tasks started outlive `opus run` when it is ended by random signals.

Runs a project whose tasks each start background processes (`sleep`, in the task's process
group and in a session of its own) on `process` and on `processpool`, ends `opus run` with a
random SIGKILL, SIGTERM or SIGINT at a random moment, 30 times per runner, and counts the
background processes still alive afterwards (target: 0).

    .venv/bin/python benchmarks/orphans.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPUS = Path(sys.executable).parent / "opus"

PROCESSOR = """
import os, subprocess, time
from pathlib import Path
from opus_core import TaskProcessor


class Starts(TaskProcessor):
    kind = "Starts"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        pids = Path("pids")
        pids.mkdir(exist_ok=True)
        for own_session in (False, True):
            sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=own_session)
            (pids / str(sleeper.pid)).touch()
        time.sleep(task.spec["seconds"])
        return {}
"""


def project(root: Path, runner: str) -> None:
    (root / "starts.py").write_text(PROCESSOR)
    tasks = "".join(
        f'[[tasks]]\nkind = "Starts"\nversion = "v1"\n'
        f'metadata = {{ name = "t{i}" }}\nspec = {{ seconds = {0.2 * (i % 5)} }}\n'
        for i in range(12)
    )
    (root / "opus.toml").write_text(
        f'[opus]\nrunner = "{runner}"\npersistence = "memory"\n'
        f'processors = ["starts:Starts"]\n[runners.{runner}]\nmax_workers = 4\n' + tasks
    )


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def one_round(runner: str, chance: random.Random) -> tuple[str, int, int]:
    root = Path(tempfile.mkdtemp(prefix="opus-orphans-"))
    try:
        project(root, runner)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
        env["XDG_STATE_HOME"] = str(root / "state")
        opus = subprocess.Popen(
            [str(OPUS), "run", "--no-progress"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(chance.uniform(0.3, 2.0))
        sent = chance.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        try:
            opus.send_signal(sent)
        except ProcessLookupError:
            pass
        opus.wait(timeout=60)
        time.sleep(1.0)  # what dies with opus has died by now
        folder = root / "pids"
        started = [int(p.name) for p in folder.iterdir()] if folder.exists() else []
        left = [pid for pid in started if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return sent.name, len(started), len(left)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chance = random.Random(args.seed)
    print(f"{'runner':<12} {'rounds':>6} {'started':>8} {'orphans':>8}  by signal")
    for runner in ("process", "processpool"):
        started = orphans = 0
        by_signal: dict[str, int] = {}
        for _ in range(args.rounds):
            sent, count, left = one_round(runner, chance)
            started += count
            orphans += left
            by_signal[sent] = by_signal.get(sent, 0) + left
        shown = ", ".join(f"{name} {count}" for name, count in sorted(by_signal.items()))
        print(f"{runner:<12} {args.rounds:>6} {started:>8} {orphans:>8}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
