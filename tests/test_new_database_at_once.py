"""A new SQLite file opened by several processes at the same instant — two `opus run` in a
new project, whose state database and resource leases do not exist yet: each process
switches the file to WAL mode, which SQLite does not wait for, so opus makes the processes
take turns (`opus_core.wal`) and none of them finds the file locked."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

from opus_core.errors import OpusError
from opus_core.leases import MachineLeases
from opus_core.persistence.sqlite import SqlitePersistence

PROCESSES = 4
ROUNDS = 8  # new files; before the processes took turns, the first round or two failed


def at_once(folder: Path, work: Callable[[Path], None]) -> list[str]:
    """Run `work(folder)` in PROCESSES forked processes released together; their errors."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(PROCESSES)
    errors = context.SimpleQueue()

    def one() -> None:
        start.wait()
        try:
            work(folder)
        except OpusError as exc:
            errors.put(str(exc))

    processes = [context.Process(target=one) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found


def save_a_state(folder: Path) -> None:
    SqlitePersistence(folder / "state.db").save_object_state("t", {"done": True})


def take_and_give_a_lease(folder: Path) -> None:
    leases = MachineLeases(folder, {"db": PROCESSES})
    lease = leases.take((("db", 1.0),))
    assert lease is not None
    leases.give(lease)


def test_processes_creating_the_state_database_at_once_all_save(tmp_path: Path) -> None:
    for round in range(ROUNDS):
        folder = tmp_path / str(round)
        assert at_once(folder, save_a_state) == []
        state = SqlitePersistence(folder / "state.db").retrieve_all_state_from_persistence()
        assert state == {"t": {"done": True}}
        assert (folder / "state.db.lock").exists()  # they took turns there


def test_processes_creating_the_resource_leases_at_once_all_take_one(tmp_path: Path) -> None:
    for round in range(ROUNDS):
        folder = tmp_path / str(round)
        assert at_once(folder, take_and_give_a_lease) == []
        assert MachineLeases(folder, {"db": PROCESSES}).held() == {}
