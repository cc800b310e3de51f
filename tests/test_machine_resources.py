"""`[opus] resources_scope = "machine"`: capacities shared by every `opus run` of a project
on the machine — real processes at once, some killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helpers import OPUS
from harness import until

from opus_core.leases import MachineLeases

pytestmark = pytest.mark.slow  # several opus processes each

PROCESSOR = """
import os, time
from pathlib import Path
from opus_core import TaskProcessor


class Busy(TaskProcessor):
    kind = "Busy"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        log = os.open("events.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        need = task.metadata.get("resources", {}).get("db", 0)
        try:
            os.write(log, f"start {os.getpid()} {task.task_id} {need} {time.monotonic_ns()}\\n".encode())
            if task.spec.get("marker"):
                Path(task.spec["marker"]).write_text("started")
            time.sleep(task.spec["seconds"])
            os.write(log, f"end {os.getpid()} {task.task_id} {need} {time.monotonic_ns()}\\n".encode())
        finally:
            os.close(log)
        return {}
"""


def project(root: Path, tasks: list[tuple[str, int, float, str]], db: int = 2) -> Path:
    """A project whose tasks (name, db need, seconds, marker) share `db` machine-wide."""
    root.mkdir(exist_ok=True)
    (root / "busy.py").write_text(PROCESSOR)
    text = (
        # sequential: each task runs in its opus process, so the log's pid is the process's
        '[opus]\nrunner = "sequential"\npersistence = "memory"\nresources_scope = "machine"\n'
        f'processors = ["busy:Busy"]\n[resources]\ndb = {db}\n'
    )
    for name, need, seconds, marker in tasks:
        text += (
            f'[[tasks]]\nkind = "Busy"\nversion = "v1"\n'
            f'metadata = {{ name = "{name}", resources = {{ db = {need} }} }}\n'
            f'spec = {{ seconds = {seconds}, marker = "{marker}" }}\n'
        )
    (root / "opus.toml").write_text(text)
    return root


def leases(root: Path) -> MachineLeases:
    """The machine's leases of the project in `root` (in its state folder)."""
    (found,) = (root / ".state").rglob("resources.db")
    return MachineLeases(found.parent, {"db": 2})


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_STATE_HOME"] = str(root / ".state")
    env["XDG_CONFIG_HOME"] = str(root / ".config")
    return env


def start(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(OPUS), "run", "--no-progress"],
        cwd=root,
        env=environment(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peak(root: Path, killed: dict[int, int]) -> float:
    """The most `db` held at once, from the log; a task of a killed process that never
    ended is counted as held until the moment SIGKILL was sent to it (`killed`)."""
    events = []
    open_tasks: dict[tuple[str, str], tuple[float, int]] = {}
    for line in (root / "events.log").read_text().splitlines():
        what, pid, name, need, at = line.split()
        key = (pid, name)
        if what == "start":
            open_tasks[key] = (float(need), int(at))
            events.append((int(at), 1, float(need)))
        else:
            open_tasks.pop(key, None)
            events.append((int(at), 0, -float(need)))
    for (pid, _), (need, _) in open_tasks.items():
        assert int(pid) in killed, (pid, "a task that never ended in a process that lived")
        events.append((killed[int(pid)], 0, -need))
    held = highest = 0.0
    for _, _, change in sorted(events):
        held += change
        highest = max(highest, held)
    return highest


@pytest.mark.parametrize("processes", [2, 4])
def test_runs_at_once_never_hold_more_than_the_machine_has(tmp_path: Path, processes: int) -> None:
    root = project(tmp_path, [(f"t{i}", 1, 0.02, "") for i in range(6)], db=2)
    running = [start(root) for _ in range(processes)]
    for process in running:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (out, err)
    assert peak(root, {}) <= 2
    lines = (root / "events.log").read_text().splitlines()
    assert sum(line.startswith("start") for line in lines) == 6 * processes
    assert leases(root).held() == {}  # nothing left behind


def test_a_holder_killed_with_sigkill_loses_its_lease_and_the_waiting_run_goes_on(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, [("hog", 2, 60, "hog.started")], db=2)
    first = start(root)
    assert until(lambda: (root / "hog.started").exists())
    # The second run: a task that needs nothing (it runs, and says so), then one that
    # needs db, which the hog holds all of.
    project(root, [("free", 0, 0, "free.done"), ("next", 1, 0, "")], db=2)
    second = start(root)
    assert until(lambda: (root / "free.done").exists())  # it is up, and waits for db
    killed_at = time.monotonic_ns()
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, (out, err)
    starts = {
        line.split()[2]: int(line.split()[4])
        for line in (root / "events.log").read_text().splitlines()
        if line.startswith("start")
    }
    assert starts["next"] > killed_at  # it waited for the hog to die
    assert peak(root, {first.pid: killed_at}) <= 2
    assert leases(root).held() == {}


def test_random_sigkills_among_four_runs_never_leave_the_living_over_capacity(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261207)
    root = project(
        tmp_path,
        [(f"t{i}", rng.randint(1, 2), rng.choice([0.01, 0.05, 0.2]), "") for i in range(8)],
        db=2,
    )
    running = [start(root) for _ in range(4)]
    killed: dict[int, int] = {}
    for victim in rng.sample(running, 2):
        # Once it has started a task (its pid is in the log), kill it.
        assert until(
            lambda v=victim: (
                f" {v.pid} " in (root / "events.log").read_text()
                if (root / "events.log").exists()
                else False
            )
        )
        killed[victim.pid] = time.monotonic_ns()
        os.kill(victim.pid, signal.SIGKILL)
    for process in running:
        out, err = process.communicate(timeout=120)
        if process.pid not in killed:
            assert process.returncode == 0, (out, err)
    assert peak(root, killed) <= 2
    assert leases(root).held() == {}
