"""The sqlite persistence: durable saves, several processes at once, files that are not its own."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error, opus, runs_at_once

from opus_core import OpusError, Task, TaskProcessor, Tasks
from opus_core.config import project_state_dir
from opus_core.persistence import MemoryPersistence
from opus_core.persistence.sqlite import SqlitePersistence, StateDatabaseError
from opus_core.plugin.manager import PluginManager

HOSTILE_IDS = ["../../etc/passwd", "nul\x00byte", "x" * 1000, "задача-✓", "'; DROP TABLE state;--"]


def test_registered_by_the_core_and_the_default_of_a_configuration(tmp_path: Path) -> None:
    assert PluginManager().registry("persistence")["sqlite"] is SqlitePersistence
    (tmp_path / "opus.toml").write_text("[opus]\n")
    tasks = Tasks.from_config(tmp_path / "opus.toml")
    assert isinstance(tasks.state_persistence, SqlitePersistence)
    assert tasks.state_persistence.path == project_state_dir(tmp_path / "opus.toml") / "state.db"
    assert type(Tasks().state_persistence) is MemoryPersistence  # built in Python: memory


def test_path_is_relative_to_the_opus_toml_that_sets_it(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    config = tmp_path / "proj" / "opus.toml"
    config.write_text('[persistence.sqlite]\npath = ".opus/state.db"\n')
    persistence = Tasks.from_config(config).state_persistence
    assert isinstance(persistence, SqlitePersistence)
    assert persistence.path == tmp_path / "proj" / ".opus" / "state.db"


def test_round_trip_hostile_ids_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "folder" / "state.db"
    persistence = SqlitePersistence(path)
    assert persistence.retrieve_all_state_from_persistence() == {}
    assert persistence.get_object_state("web") == {}
    assert persistence.list_runs() == [] and persistence.load_run("x") is None
    assert not persistence.delete_object_state("web")
    assert not path.parent.exists()  # reading creates nothing
    for identifier in HOSTILE_IDS:
        persistence.save_object_state(identifier, {"id": identifier, "n": [1, 2.5, None]})
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    again = SqlitePersistence(path)  # another process would see the same
    assert again.retrieve_all_state_from_persistence() == {
        i: {"id": i, "n": [1, 2.5, None]} for i in HOSTILE_IDS
    }
    assert again.delete_object_state("nul\x00byte")
    assert "nul\x00byte" not in persistence.retrieve_all_state_from_persistence()


def test_non_json_state_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    persistence = SqlitePersistence(tmp_path / "state.db")
    with pytest.raises(OpusError, match="not JSON data"):
        persistence.save_object_state("web", {"when": object()})
    with pytest.raises(OpusError, match="not JSON data"):
        persistence.save_object_state("web", {"x": float("nan")})
    assert persistence.get_object_state("web") == {}


SAVER = textwrap.dedent(
    """
    import sys
    from opus_core.persistence.sqlite import SqlitePersistence
    persistence = SqlitePersistence(sys.argv[1])
    start = int(sys.argv[2])
    print("ready", flush=True)
    for i in range(start, start + 1_000_000):
        persistence.save_object_state(f"opus-run:apply:default:t{i}", {"i": i, "pad": "x" * 300})
        if i % 7 == 0:
            persistence.save_run({"id": f"run-{i:09d}", "status": "running", "tasks": [
                {"name": f"t{j}", "status": "succeeded"} for j in range(50)]})
        print(i, flush=True)  # after the commit: this one must survive
    """
)


def test_every_committed_save_survives_kill_9_at_any_instant(tmp_path: Path) -> None:
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "state.db"
    start = 0
    for delay in (0.05, 0.13, 0.02, 0.21, 0.08, 0.17, 0.11, 0.03):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        committed = [int(line) for line in out.split()]
        persistence = SqlitePersistence(path)
        state = persistence.retrieve_all_state_from_persistence()
        for i in committed:
            assert state[f"opus-run:apply:default:t{i}"] == {"i": i, "pad": "x" * 300}
        for run in persistence.list_runs():
            assert len(persistence.load_run(run["id"])["tasks"]) == 50  # whole, never torn
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        persistence.close()
        start = max(committed, default=start) + 1
    assert start > 8


WRITER = textwrap.dedent(
    """
    import sys
    from opus_core.persistence.sqlite import SqlitePersistence
    persistence = SqlitePersistence(sys.argv[1])
    who = sys.argv[2]
    for i in range(150):
        persistence.save_object_state(f"{who}-{i}", {"who": who, "i": i})
        persistence.save_object_state("shared", {"who": who, "i": i})
        if i % 10 == 0:
            persistence.save_run({"id": f"{who}-{i:03d}", "status": "running", "tasks": []})
            persistence.prune_runs(keep=40)
    """
)


def test_four_processes_writing_at_once_never_find_it_locked(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "state.db"  # created by whichever process comes first
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in "abcd"
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
        assert "locked" not in err
    state = SqlitePersistence(path).retrieve_all_state_from_persistence()
    assert len(state) == 4 * 150 + 1
    assert all(state[f"{w}-{i}"] == {"who": w, "i": i} for w in "abcd" for i in range(150))
    assert state["shared"]["i"] == 149
    assert len(SqlitePersistence(path).list_runs()) <= 40


NOOP = """
from opus_core import TaskProcessor

class Noop(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        state_persistence.save_object_state(f"note-{task.task_id}", {"seen": True})
        return {task.task_id: 1}
"""


def test_three_opus_runs_at_once_on_the_default_persistence(tmp_path: Path) -> None:
    (tmp_path / "noop.py").write_text(NOOP)
    head = '[opus]\nrunner = "threadpool"\nprocessors = ["noop:Noop"]\n'
    for status, out, err in runs_at_once(tmp_path, head, 80, ("one", "two", "three")):
        assert status == 0, out + err
        assert "locked" not in err
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / ".user")
    database = project_state_dir(tmp_path / "opus.toml") / "state.db"
    persistence = SqlitePersistence(database)
    state = persistence.retrieve_all_state_from_persistence()
    records = {key for key in state if key.startswith("opus-run:")}
    assert len(records) == 240
    assert {state[key]["status"] for key in records} == {"succeeded"}
    runs = persistence.list_runs()
    assert sorted(run["context"] for run in runs) == ["one", "three", "two"]
    assert {run["status"] for run in runs} == {"succeeded"}
    resumed = opus("run", "--resume", "--context", "two", cwd=tmp_path, env=env)
    assert "80 restored" in resumed.stdout, resumed.stdout + resumed.stderr


def test_a_writer_waits_for_another_process_then_fails_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    persistence = SqlitePersistence(path, busy_timeout=0.3)
    persistence.save_object_state("before", {"v": 1})
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(StateDatabaseError, match=f"state database {path}: cannot save"):
            persistence.save_object_state("during", {"v": 2})
        assert time.monotonic() - start >= 0.25
        releaser = threading.Timer(0.2, holder.execute, ("COMMIT",))
        releaser.start()
        SqlitePersistence(path, busy_timeout=5).save_object_state("waited", {"v": 3})
        releaser.join()
    finally:
        holder.close()
    assert set(persistence.retrieve_all_state_from_persistence()) == {"before", "waited"}


def test_a_file_that_is_not_a_database_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not SQLite, it is someone's notes\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StateDatabaseError, match=f"state database {path}.*not an SQLite database"):
        SqlitePersistence(path).retrieve_all_state_from_persistence()
    with pytest.raises(StateDatabaseError, match="move it aside"):
        SqlitePersistence(path).save_object_state("web", {})
    assert path.read_bytes() == before  # never changed


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (name TEXT)")
        other.execute("INSERT INTO customers VALUES ('ada')")
    other.close()
    before = path.read_bytes()
    with pytest.raises(StateDatabaseError, match="is not an opus state database"):
        SqlitePersistence(path).save_object_state("web", {})
    assert path.read_bytes() == before


def test_a_newer_schema_or_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqlitePersistence(path).save_object_state("web", {})
    with sqlite3.connect(path) as newer:
        newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(StateDatabaseError, match="written by a newer opus"):
        SqlitePersistence(path).get_object_state("web")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StateDatabaseError, match="is not a regular file"):
        SqlitePersistence(tmp_path / "dir.db").save_object_state("web", {})


def test_opus_run_over_a_damaged_database_is_one_line_naming_it(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(os.urandom(8192))
    (tmp_path / "opus.toml").write_text(
        '[persistence.sqlite]\npath = "state.db"\n'
        '[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = { name = "a" }\n'
        '[opus]\nprocessors = ["noop:Noop"]\n'
    )
    (tmp_path / "noop.py").write_text(NOOP)
    for command in (("run",), ("runs", "list"), ("runs", "show"), ("state", "show", "a")):
        message = one_line_error(opus(*command, cwd=tmp_path))
        assert f"state database {database}" in message, message
    listing = opus("state", "list", cwd=tmp_path)  # its first line says where the state is
    assert listing.returncode == 2 and "Traceback" not in listing.stderr
    assert listing.stderr.splitlines()[-1].startswith(f"opus: error: state database {database}")


def damage_past_the_header(database: Path) -> None:
    """Overwrite pages in the middle of `database` (its first page, the header, kept)."""
    with sqlite3.connect(database) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    pages = database.stat().st_size // 4096
    with database.open("r+b") as file:
        file.seek(4096 * (pages // 2))
        file.write(b"\xff" * 4096 * 3)


def test_a_database_damaged_past_its_header_is_refused_before_any_write(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    (tmp_path / "noop.py").write_text(NOOP)
    tasks = [
        f'[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = {{ name = "t{i}" }}\n'
        for i in range(200)
    ]
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["noop:Noop"]\n[persistence.sqlite]\npath = "state.db"\n'
        + "\n".join(tasks)
    )
    assert opus("run", "--no-progress", cwd=tmp_path).returncode == 0
    damage_past_the_header(database)
    before = database.read_bytes()
    commands = [
        ("run",),
        ("run", "--resume"),
        ("state", "clear", "--yes"),
        ("runs", "list"),
        ("runs", "show"),
        ("runs", "prune", "--keep", "1"),
        ("report", "-o", "report.html"),
    ]
    for command in commands:
        message = one_line_error(opus(*command, cwd=tmp_path))
        assert f"state database {database} is damaged" in message, message
        assert "move it aside" in message and "`opus state clear` cannot repair it" in message
    listing = opus("state", "list", cwd=tmp_path)  # its first line says where the state is
    assert listing.returncode == 2 and "Traceback" not in listing.stderr
    assert f"state database {database} is damaged" in listing.stderr.splitlines()[-1]
    assert database.read_bytes() == before  # never changed

    writer = SqlitePersistence(database)
    with pytest.raises(StateDatabaseError, match="is damaged.*quick_check"):
        writer.save_object_state("web", {})
    assert database.read_bytes() == before


def test_malformed_found_after_the_check_is_the_same_error(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    checked = SqlitePersistence(database)
    for i in range(2000):
        checked.save_object_state(f"task-{i}", {"result": "x" * 100})
    damage_past_the_header(database)
    reader = SqlitePersistence(database)  # this process checked it before it was damaged
    with pytest.raises(StateDatabaseError, match=f"{database} is damaged.*malformed.*aside"):
        reader.retrieve_all_state_from_persistence()


def test_a_symlink_to_a_missing_file_is_named_by_every_command(tmp_path: Path) -> None:
    (tmp_path / "state.db").symlink_to("missing.db")
    (tmp_path / "noop.py").write_text(NOOP)
    (tmp_path / "opus.toml").write_text(
        '[persistence.sqlite]\npath = "state.db"\n'
        '[[tasks]]\nkind = "Noop"\nversion = "v1"\nmetadata = { name = "a" }\n'
        '[opus]\nprocessors = ["noop:Noop"]\n'
    )
    expected = f"state database {tmp_path / 'state.db'} is a symlink to a missing file (missing.db)"
    for command in (
        ("run",),
        ("runs", "list"),
        ("runs", "show"),
        ("state", "show", "a"),
        ("report",),
    ):
        message = one_line_error(opus(*command, cwd=tmp_path))
        assert expected in message and "does not follow symlinks" in message, message
    listing = opus("state", "list", cwd=tmp_path)
    assert listing.returncode == 2 and expected in listing.stderr.splitlines()[-1]
    assert not (tmp_path / "missing.db").exists()


def test_a_damaged_entry_is_skipped_with_a_warning_and_named_when_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    persistence = SqlitePersistence(path)
    persistence.save_object_state("good", {"v": 1})
    persistence.save_object_state("bad", {"v": 2})
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE state SET data = '{torn' WHERE id = 'bad'")
    raw.close()
    assert persistence.retrieve_all_state_from_persistence() == {"good": {"v": 1}}
    assert "the entry 'bad' is damaged" in capsys.readouterr().err
    assert persistence.get_object_states(["bad", "good"]) == {"good": {"v": 1}}
    with pytest.raises(StateDatabaseError, match="`opus state clear bad` removes it"):
        persistence.get_object_state("bad")
    assert persistence.delete_object_state("bad")


class Reader(TaskProcessor):
    kind = "Reader"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        seen = state_persistence.get_object_state("config")
        state_persistence.save_object_state(f"seen-{task.task_id}", {"pid": os.getpid(), **seen})
        return {task.task_id: seen["colour"]}


def test_tasks_in_forked_processes_read_and_write_through_their_own_connection(
    tmp_path: Path,
) -> None:
    persistence = SqlitePersistence(tmp_path / "state.db")
    persistence.save_object_state("config", {"colour": "blue"})
    tasks = Tasks(runner="process", state_persistence=persistence)
    tasks.register_task_processor(Reader)
    for i in range(4):
        tasks.add_task(Task("Reader", "v1", metadata={"name": f"r{i}"}))
    report = tasks.process_context()
    assert report.ok, [r.error for r in report]
    assert tasks.key_value_store.store == {f"r{i}": "blue" for i in range(4)}
    state = SqlitePersistence(tmp_path / "state.db").retrieve_all_state_from_persistence()
    assert {state[f"seen-r{i}"]["colour"] for i in range(4)} == {"blue"}
    assert all(state[f"seen-r{i}"]["pid"] != os.getpid() for i in range(4))
    persistence.save_object_state("after", {})  # the parent's connection still works


def test_it_travels_without_its_connection(tmp_path: Path) -> None:
    persistence = SqlitePersistence(tmp_path / "state.db")
    persistence.save_object_state("web", {"v": 1})
    copy = pickle.loads(pickle.dumps(persistence))
    assert copy.get_object_state("web") == {"v": 1}
    copy.save_object_state("db", {"v": 2})
    assert persistence.get_object_state("db") == {"v": 2}


def test_options_are_checked(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text('[persistence.sqlite]\nsynchronous = "sometimes"\n')
    message = one_line_error(opus("run", cwd=tmp_path))
    assert "persistence.sqlite" in message and "synchronous must be 'normal' or 'full'" in message


def test_many_states_are_read_a_few_hundred_ids_a_query(tmp_path: Path) -> None:
    persistence = SqlitePersistence(tmp_path / "state.db")
    for i in range(1201):
        persistence.save_object_state(f"id-{i}", {"i": i})
    wanted = [f"id-{i}" for i in range(0, 1300, 2)]
    found = persistence.get_object_states(wanted)
    assert found == {f"id-{i}": {"i": i} for i in range(0, 1201, 2)}
    assert SqlitePersistence(tmp_path / "missing.db").get_object_states(wanted) == {}
    assert not (tmp_path / "missing.db").exists()
