"""The sqlite persistence: durable saves, several processes at once, files that are not its own."""

from __future__ import annotations

import json
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opus_core import OpusError, Task, TaskProcessor, Tasks
from opus_core.config import project_state_dir
from opus_core.persistence import MemoryPersistence
from opus_core.persistence.sqlite import SqlitePersistence, StateDatabaseError
from opus_core.persistence.sqlite_rows import ALL_ABSENT, COLUMNS
from opus_core.persistence.sqlite_schema import SCHEMA_VERSION
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
    for value, why in [
        ("0", "keep_runs must be a whole number of runs, at least 1, not 0"),
        ("true", "keep_runs must be a whole number, got True"),
        ("2.5", "keep_runs must be a whole number, got 2.5"),
    ]:
        (tmp_path / "opus.toml").write_text(f"[persistence.sqlite]\nkeep_runs = {value}\n")
        message = one_line_error(opus("run", cwd=tmp_path))
        assert "persistence.sqlite" in message and why in message, message


def test_the_history_keeps_the_newest_runs_and_forgets_their_tasks(tmp_path: Path) -> None:
    """`keep_runs`: as each run is saved, the runs beyond the newest N go, tasks and all; a
    run saved again as it ends stays one run. The default keeps 100."""
    database = tmp_path / "state.db"
    assert SqlitePersistence(database).keep_runs == 100
    persistence = SqlitePersistence(database, keep_runs=2)
    task = {"name": "web", "status": "succeeded"}
    for i in range(4):
        run_id = f"2026010{i}T000000.000-aaaaaa"
        persistence.save_run({"id": run_id, "status": "running", "tasks": [task]})
        persistence.save_run({"id": run_id, "status": "succeeded", "tasks": [task, task]})
    assert [run["id"] for run in persistence.list_runs()] == [
        "20260103T000000.000-aaaaaa",
        "20260102T000000.000-aaaaaa",
    ]
    with sqlite3.connect(database) as db:
        kept = db.execute("SELECT run_id, count(*) FROM task_runs GROUP BY run_id").fetchall()
    db.close()
    assert sorted(kept) == [("20260102T000000.000-aaaaaa", 2), ("20260103T000000.000-aaaaaa", 2)]


def test_opus_run_keeps_as_many_runs_as_configured(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text(
        '[persistence.sqlite]\npath = "state.db"\nkeep_runs = 2\n\n'
        '[[tasks]]\nkind = "Command"\nversion = "v1"\nmetadata = { name = "hello" }\n'
        'spec = { run = "true" }\n'
    )
    ids = []
    for _ in range(3):
        ran = opus("run", "--json", cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        ids.append(json.loads(ran.stdout)["run"])
    listed = opus("runs", "list", "--json", cwd=tmp_path)
    assert [run["id"] for run in json.loads(listed.stdout)] == ids[:0:-1]  # the two newest


def test_many_states_are_read_a_few_hundred_ids_a_query(tmp_path: Path) -> None:
    persistence = SqlitePersistence(tmp_path / "state.db")
    for i in range(1201):
        persistence.save_object_state(f"id-{i}", {"i": i})
    wanted = [f"id-{i}" for i in range(0, 1300, 2)]
    found = persistence.get_object_states(wanted)
    assert found == {f"id-{i}": {"i": i} for i in range(0, 1201, 2)}
    assert SqlitePersistence(tmp_path / "missing.db").get_object_states(wanted) == {}
    assert not (tmp_path / "missing.db").exists()


# -- the run history's rows ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [*COLUMNS, "dependencies", "attempt_log", "resources", "priority", "shape", "more", "x"]
)


def one_attempt(entry: dict[str, object]) -> list[dict[str, object]]:
    """The attempt log of a task tried once, as the engine writes it."""
    keys = ("started_at", "ended_at", "status", "error")
    return [{"attempt": 1, **{key: entry.get(key) for key in keys}}]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(st.dictionaries(FIELDS, JSON_VALUES), max_size=4), derive=st.booleans())
def test_a_runs_tasks_read_back_as_they_went_in_whatever_their_fields(
    tmp_path: Path, entries: list[dict[str, object]], derive: bool
) -> None:
    """Columns give back each value of its own type (a bool is not 1, 2**70 is no float), and
    a field a column cannot hold goes where it can; an attempt log made of the task's own
    columns is not stored twice, yet comes back. The order of the fields is not kept."""
    if derive:
        entries = [{**entry, "attempt_log": one_attempt(entry)} for entry in entries]
    # The examples share the database, their ids in no order: every run is kept.
    persistence = SqlitePersistence(tmp_path / "state.db", keep_runs=10**6)
    run_id = f"20260101T000000.000-{os.urandom(3).hex()}"
    persistence.save_run({"id": run_id, "status": "failed", "tasks": entries})
    loaded = SqlitePersistence(tmp_path / "state.db").load_run(run_id)
    assert loaded is not None
    # repr: 1 is not True, 1.0 is not 1; the order of a task's fields is not kept
    assert [repr(sorted(t.items())) for t in loaded["tasks"]] == [
        repr(sorted(t.items())) for t in entries
    ]
    persistence.close()


class Quiet(TaskProcessor):
    kind = "Noop"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {}


def test_an_engine_runs_tasks_are_columns_and_read_back_whole(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    tasks = Tasks(state_persistence=SqlitePersistence(database))
    tasks.register_task_processor(Quiet)
    tasks.add_task(Task("Noop", "v1", metadata={"name": "a"}))
    tasks.add_task(Task("Noop", "v1", metadata={"name": "b", "dependencies": ["a"]}))
    tasks.process_context("apply", "default")
    run = tasks.state_persistence.load_run(tasks.state_persistence.list_runs()[0]["id"])
    assert run is not None
    b = run["tasks"][1]
    assert (b["name"], b["kind"], b["status"], b["attempts"], b["dependencies"]) == (
        "b",
        "Noop",
        "succeeded",
        1,
        ["a"],
    )
    assert b["attempt_log"] == one_attempt(b) and b["started_at"] <= b["ended_at"]
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT name, status, more FROM task_runs ORDER BY position").fetchall()
    db.close()
    assert rows == [
        ("a", "succeeded", None),  # no dependency: a bit of its shape, no JSON
        ("b", "succeeded", '{"dependencies": ["a"]}'),
    ]
    assert run["tasks"][0]["dependencies"] == []
    assert list(run["tasks"][0]).index("dependencies") == list(b).index("dependencies")


def assert_a_new_run_reads_back(
    persistence: SqlitePersistence, tasks: list[dict[str, object]]
) -> None:
    """A run saved now, beside the old ones, reads back whole from a new connection."""
    run = {"id": "20260101T000000.000-bbbbbb", "status": "running", "tasks": tasks}
    persistence.save_run(run)
    assert SqlitePersistence(persistence.path).load_run(run["id"]) == run


FIRST_SCHEMA = """
CREATE TABLE state (id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE runs (id TEXT PRIMARY KEY, started_at REAL, ended_at REAL, status TEXT NOT NULL,
                   summary TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE task_runs (run_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL,
                        status TEXT NOT NULL, data TEXT NOT NULL,
                        PRIMARY KEY (run_id, position)) WITHOUT ROWID;
PRAGMA application_id = 1869641075;
PRAGMA user_version = 1;
"""


def test_a_database_of_the_first_schema_keeps_its_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opened by this opus, a database written by the first schema (each task of a run one
    JSON object) is brought to this one in place: its runs read back as they were,
    a damaged task is skipped with a warning as before, and new runs go in beside them."""
    database = tmp_path / "state.db"
    old = {"name": "web", "status": "failed", "attempts": 2, "error": "boom ☃", "x": [1]}
    with sqlite3.connect(database) as db:
        db.executescript(FIRST_SCHEMA)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(
            "INSERT INTO runs VALUES ('20250101T000000.000-aaaaaa', 1.0, 2.0, 'failed', ?)",
            ('{"status": "failed", "command": "apply"}',),
        )
        rows = [(0, "web", "failed", json.dumps(old)), (1, "db", "succeeded", "{damaged")]
        db.executemany(
            "INSERT INTO task_runs VALUES ('20250101T000000.000-aaaaaa', ?, ?, ?, ?)", rows
        )
        db.execute("INSERT INTO state VALUES ('web', '{\"v\": 1}')")
    db.close()
    persistence = SqlitePersistence(database)
    run = persistence.load_run("20250101T000000.000-aaaaaa")
    assert run == {
        "status": "failed",
        "command": "apply",
        "id": "20250101T000000.000-aaaaaa",
        "tasks": [old],
    }
    assert "the entry 'run 20250101T000000.000-aaaaaa task 1' is damaged" in capsys.readouterr().err
    assert persistence.get_object_state("web") == {"v": 1}
    assert_a_new_run_reads_back(persistence, [old])
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "task_runs_1" not in tables


def test_a_database_of_the_second_schema_is_marked_the_third_and_reads_the_same(
    tmp_path: Path,
) -> None:
    """Schema 3 only adds a shape bit (no dependencies): a database of schema 2 keeps its
    rows as they are, is marked 3 when first written, and an entry's empty `dependencies`
    comes back whichever schema wrote it — and an entry without one gains none."""
    database = tmp_path / "state.db"
    with_none = {"name": "a", "status": "succeeded", "dependencies": []}
    without = {"name": "b", "status": "succeeded"}
    old = SqlitePersistence(database)
    old.save_run({"id": "20250101T000000.000-aaaaaa", "status": "succeeded", "tasks": [without]})
    old.close()
    with sqlite3.connect(database) as db:  # as schema 2 wrote it: the empty list in `more`
        db.execute(
            "INSERT INTO task_runs (run_id, position, name, status, shape, more) "
            "VALUES ('20250101T000000.000-aaaaaa', 1, 'a', 'succeeded', ?, ?)",
            (ALL_ABSENT ^ 0b101, '{"dependencies": []}'),
        )
        db.execute("PRAGMA user_version = 2")
    db.close()
    persistence = SqlitePersistence(database)
    assert persistence.load_run("20250101T000000.000-aaaaaa") == {
        "id": "20250101T000000.000-aaaaaa",
        "status": "succeeded",
        "tasks": [without, with_none],
    }
    assert_a_new_run_reads_back(persistence, [with_none])
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        more = db.execute("SELECT more FROM task_runs WHERE run_id LIKE '2026%'").fetchone()
    db.close()
    assert more == (None,)


class Moody(TaskProcessor):
    kind = "Moody"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        mood = task.spec.get("mood")
        if mood == "print":
            print("hello from", task.task_id)
        if mood == "fail" or (
            mood == "flaky" and not state_persistence.get_object_state(f"tried-{task.task_id}")
        ):
            state_persistence.save_object_state(f"tried-{task.task_id}", {"yes": True})
            raise RuntimeError(f"{task.task_id} \udc80 failed")
        return {task.task_id: 1}


class Keeping(SqlitePersistence):
    """Keeps the last run it was given, as the engine gave it."""

    given: dict[str, object] = {}

    def save_run(self, run: dict[str, object]) -> None:
        super().save_run(run)
        Keeping.given = run


def test_every_kind_of_task_entry_of_an_engine_run_reads_back_as_the_engine_made_it(
    tmp_path: Path,
) -> None:
    """Retried, failed (an error that is not valid Unicode), skipped, printing, with resources
    and priority: each task's entry reads back from the database as the engine made it."""
    persistence = Keeping(tmp_path / "state.db")
    tasks = Tasks(state_persistence=persistence, resources={"db": 2})
    tasks.register_task_processor(Moody)
    for name, spec, more in [
        ("plain", {}, {}),
        ("flaky", {"mood": "flaky"}, {"retries": 1, "retry_sleep_time": 0}),
        ("broken", {"mood": "fail"}, {}),
        ("after", {}, {"dependencies": ["broken"]}),
        ("loud", {"mood": "print"}, {"resources": {"db": 1}, "priority": 3}),
    ]:
        tasks.add_task(Task("Moody", "v1", metadata={"name": name, **more}, spec=spec))
    report = tasks.process_context("apply", "default")
    assert {r.task_id: r.status.value for r in report} == {
        "plain": "succeeded",
        "flaky": "succeeded",
        "broken": "failed",
        "after": "skipped",
        "loud": "succeeded",
    }
    made = list(Keeping.given["tasks"])  # type: ignore[call-overload]
    loaded = SqlitePersistence(tmp_path / "state.db").load_run(str(Keeping.given["id"]))
    assert loaded is not None
    assert [repr(sorted(t.items())) for t in loaded["tasks"]] == [
        repr(sorted(t.items())) for t in made
    ]
    by_name = {t["name"]: t for t in loaded["tasks"]}
    assert len(by_name["flaky"]["attempt_log"]) == 2
    assert by_name["loud"]["resources"] == {"db": 1} and by_name["loud"]["priority"] == 3
    assert "hello from loud" in by_name["loud"]["attempt_log"][0]["output"]["stdout"]
    assert by_name["after"]["attempt_log"] == []
