"""The file persistence: atomic JSON files, safe names, locking, damaged files, failing disks."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error, opus
from opus_plugin_file_persistence import FilePersistence, StateFileError, file_name

from opus_core import OpusError, StatePersistence, Tasks
from opus_core.plugin.manager import PluginManager

HOSTILE_IDS = [
    "../../etc/passwd",
    "/absolute/path",
    "a/b\\c",
    "..",
    ".",
    ".hidden",
    "nul\x00byte",
    "x" * 1000,
    "задача-✓",
    "emoji 🚀 and spaces",
    "t-looks-like-a-file.json",
    "",
]


def test_registered_through_its_entry_point() -> None:
    manager = PluginManager()
    assert manager.registry("persistence")["file"] is FilePersistence
    assert issubclass(FilePersistence, StatePersistence)


def test_round_trip_and_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    persistence = FilePersistence(directory)
    persistence.save_object_state("web", {"replicas": 3, "tags": ["a"], "nested": {"x": None}})
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    [path] = directory.glob("*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "id": "web",
        "state": {"nested": {"x": None}, "replicas": 3, "tags": ["a"]},
    }
    fresh = FilePersistence(directory)  # another process would see the same
    assert fresh.get_object_state("web") == {"replicas": 3, "tags": ["a"], "nested": {"x": None}}
    assert fresh.retrieve_all_state_from_persistence() == {
        "web": {"replicas": 3, "tags": ["a"], "nested": {"x": None}}
    }
    assert fresh.get_object_state("missing") == {}
    assert fresh.delete_object_state("web") is True
    assert fresh.delete_object_state("web") is False
    assert fresh.retrieve_all_state_from_persistence() == {}


def test_hostile_ids_stay_inside_the_directory_and_round_trip(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    persistence = FilePersistence(directory)
    for index, identifier in enumerate(HOSTILE_IDS[:-1]):
        persistence.save_object_state(identifier, {"index": index})
    names = sorted(p.name for p in directory.iterdir())
    assert all(
        name == ".lock" or (name[:2] in ("t-", "h-") and name.endswith(".json")) for name in names
    ), names
    assert all(len(name) < 120 for name in names)
    assert not (tmp_path / "etc").exists() and not Path("/absolute/path").exists()
    everything = FilePersistence(directory).retrieve_all_state_from_persistence()
    assert everything == {identifier: {"index": i} for i, identifier in enumerate(HOSTILE_IDS[:-1])}
    with pytest.raises(OpusError, match="non-empty string"):
        persistence.save_object_state("", {"x": 1})


def test_file_names_are_never_paths() -> None:
    for identifier in HOSTILE_IDS:
        name = file_name(identifier)
        assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert file_name("web-1.2") == "t-web-1.2.json"


def test_non_json_state_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    persistence = FilePersistence(tmp_path)
    with pytest.raises(OpusError, match="state for 'web' is not JSON data"):
        persistence.save_object_state("web", {"when": {1, 2}})
    with pytest.raises(OpusError, match="not JSON data"):
        persistence.save_object_state("web", {"x": float("nan")})
    assert list(tmp_path.glob("*.json")) == []


def test_a_damaged_file_is_reported_and_the_rest_stays_usable(tmp_path: Path, capsys) -> None:
    persistence = FilePersistence(tmp_path)
    persistence.save_object_state("good", {"ok": True})
    persistence.save_object_state("bad", {"ok": True})
    damaged = tmp_path / file_name("bad")
    damaged.write_text('{"id": "bad", "state": {"ok": tr')  # truncated
    assert persistence.retrieve_all_state_from_persistence() == {"good": {"ok": True}}
    assert str(damaged) in capsys.readouterr().err
    assert persistence.problems and str(damaged) in persistence.problems[0]
    with pytest.raises(StateFileError, match=f"state file {damaged} is damaged: not valid JSON"):
        persistence.get_object_state("bad")
    persistence.save_object_state("bad", {"ok": "again"})  # and it can be overwritten
    assert persistence.get_object_state("bad") == {"ok": "again"}


CRASHER = textwrap.dedent(
    """
    import sys
    from opus_plugin_file_persistence import FilePersistence
    persistence = FilePersistence(sys.argv[1])
    big = "x" * 200_000
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        persistence.save_object_state("shared", {"i": i, "pad": big})
        persistence.save_object_state(f"task-{i % 50}", {"i": i})
    """
)


def test_killed_mid_write_leaves_old_or_new_state_never_torn(tmp_path: Path) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    directory = tmp_path / "state"
    last = 0
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31, 0.07, 0.13, 0.29):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(directory)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = FilePersistence(directory).retrieve_all_state_from_persistence()
        assert state["shared"]["pad"] == "x" * 200_000
        assert state["shared"]["i"] >= 1
        for path in directory.glob("[th]-*.json"):
            json.loads(path.read_text())  # every file is whole
        last = state["shared"]["i"]
    assert last > 0
    assert len(list(directory.glob(".tmp-*"))) <= 1  # each write cleans up the killed ones
    FilePersistence(directory).save_object_state("after", {})  # and so does the next one
    assert not list(directory.glob(".tmp-*"))


WRITER = textwrap.dedent(
    """
    import sys
    from opus_plugin_file_persistence import FilePersistence
    persistence = FilePersistence(sys.argv[1])
    who = sys.argv[2]
    for i in range(150):
        persistence.save_object_state(f"{who}-{i}", {"who": who, "i": i})
        persistence.save_object_state("shared", {"who": who, "i": i})
    """
)


def test_two_processes_writing_to_one_directory(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    directory = tmp_path / "state"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(directory), who]) for who in ("a", "b")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    state = FilePersistence(directory).retrieve_all_state_from_persistence()
    assert len(state) == 301
    assert all(state[f"{who}-{i}"] == {"who": who, "i": i} for who in "ab" for i in range(150))
    assert state["shared"]["i"] == 149


def test_a_writer_waits_for_the_lock_then_fails_clearly(tmp_path: Path) -> None:
    persistence = FilePersistence(tmp_path, lock_timeout=0.3)
    persistence.save_object_state("before", {"v": 1})
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        with pytest.raises(
            StateFileError, match=f"state directory {tmp_path} is locked by another opus process"
        ):
            persistence.save_object_state("during", {"v": 2})
        assert time.monotonic() - start >= 0.3
    finally:
        os.close(fd)
    persistence.save_object_state("after", {"v": 3})
    assert set(persistence.retrieve_all_state_from_persistence()) == {"before", "after"}


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from opus_plugin_file_persistence import FilePersistence
    persistence = FilePersistence(sys.argv[1])
    persistence.save_object_state("web", {"version": 1})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writes past 4 KiB fail
    try:
        persistence.save_object_state("web", {"version": 2, "pad": "x" * 100_000})
    except Exception as exc:
        print(type(exc).__name__, exc)
    """
)


def test_a_failing_disk_is_a_clear_error_and_the_old_state_is_intact(tmp_path: Path) -> None:
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    directory = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, str(script), str(directory)], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.startswith("StateFileError cannot save state for 'web'"), (
        result.stdout + result.stderr
    )
    assert "the previous state is intact" in result.stdout
    assert FilePersistence(directory).get_object_state("web") == {"version": 1}
    assert not list(directory.glob(".tmp-*"))


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StateFileError, match="cannot create the state directory"):
        FilePersistence(blocker / "state").save_object_state("x", {"a": 1})


def test_configured_from_opus_toml_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    config = tmp_path / "proj" / "opus.toml"
    config.write_text(
        '[opus]\npersistence = "file"\n[persistence.file]\ndirectory = ".opus-state"\n'
    )
    tasks = Tasks.from_config(config)
    assert isinstance(tasks.state_persistence, FilePersistence)
    assert tasks.state_persistence.directory == tmp_path / "proj" / ".opus-state"


def test_state_commands_over_the_file_persistence(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text(
        '[opus]\npersistence = "file"\n[persistence.file]\ndirectory = "state"\n'
    )
    persistence = FilePersistence(tmp_path / "state")
    persistence.save_object_state("web", {"status": "succeeded", "checksum": "abc"})
    persistence.save_object_state("../db", {"status": "failed"})
    listing = opus("state", "list", cwd=tmp_path)
    assert listing.returncode == 0
    rows = [line.split()[:2] for line in listing.stdout.splitlines()[1:]]
    assert rows == [["../db", "failed"], ["web", "succeeded"]]
    shown = opus("state", "show", "web", cwd=tmp_path)
    assert json.loads(shown.stdout) == {"status": "succeeded", "checksum": "abc"}
    assert opus("state", "clear", "web", cwd=tmp_path).stdout.strip() == "cleared 1 record(s)"
    assert opus("state", "clear", "--yes", cwd=tmp_path).stdout.strip() == "cleared 1 record(s)"
    assert opus("state", "list", cwd=tmp_path).stdout.strip() == "no state"


# -- issue 14, items 17-20: the state directory is shared with whatever else is there ------------


def state_project(tmp_path: Path, directory: str = "state") -> Path:
    (tmp_path / "opus.toml").write_text(
        f'[opus]\npersistence = "file"\n[persistence.file]\ndirectory = "{directory}"\n'
    )
    return tmp_path


def warnings_naming(stderr: str, path: Path) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("opus: warning:") and str(path) in line
    ]


def test_only_opus_own_temporary_files_are_removed_and_never_by_a_read(tmp_path: Path) -> None:
    # item 17: `directory = "."` is the user's project directory
    root = state_project(tmp_path, ".")
    notes = root / ".tmp-notes.txt"
    notes.write_text("mine")
    (root / ".tmp-build").mkdir()
    (root / ".tmp-build" / "out.o").write_text("built")
    leftover = root / ".tmp-opus-123-0123456789abcdef.json"  # a write killed mid-way
    leftover.write_text('{"id": "web", "sta')
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("keep")
    decoy = root / ".tmp-opus-124-fedcba9876543210.json"  # named like opus's, but a link
    decoy.symlink_to(outside)
    before = sorted(p.name for p in root.iterdir())

    listing = opus("state", "list", cwd=root)
    assert listing.returncode == 0, listing.stderr
    assert "Traceback" not in listing.stderr and listing.stdout.strip() == "no state"
    assert opus("state", "show", "web", cwd=root).returncode == 2
    assert sorted(p.name for p in root.iterdir()) == before  # a read changes nothing

    FilePersistence(root).save_object_state("web", {"ok": True})  # a write cleans up
    assert notes.read_text() == "mine"
    assert (root / ".tmp-build" / "out.o").read_text() == "built"
    assert not leftover.exists()
    assert decoy.is_symlink() and outside.read_text() == "keep"
    assert json.loads(opus("state", "show", "web", cwd=root).stdout) == {"ok": True}


def test_damaged_entries_are_skipped_with_one_warning_never_followed_or_read_unbounded(
    tmp_path: Path,
) -> None:
    # item 18
    root = state_project(tmp_path)
    directory = root / "state"
    FilePersistence(directory).save_object_state("good", {"status": "succeeded"})
    deep = directory / file_name("deep")
    deep.write_text('{"id": "deep", "state": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    zero = directory / file_name("zero")
    zero.symlink_to("/dev/zero")
    fifo = directory / file_name("fifo")
    os.mkfifo(fifo)
    outside = tmp_path / "outside.json"  # a valid record, but outside the directory
    outside.write_text(json.dumps({"id": "outside", "state": {"secret": 1}}))
    link = directory / file_name("outside")
    link.symlink_to(outside)
    huge = directory / file_name("huge")
    with huge.open("wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)  # sparse: costs no disk
    damaged = [deep, zero, fifo, link, huge]

    listing = opus("state", "list", cwd=root, timeout=30)
    assert listing.returncode == 0, listing.stderr
    assert "Traceback" not in listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ["good"]
    for path in damaged:
        [warning] = warnings_naming(listing.stderr, path)
        assert warning.startswith(f"opus: warning: state file {path} is damaged")
    assert "symbolic link" in warnings_naming(listing.stderr, zero)[0]
    assert "not a regular file" in warnings_naming(listing.stderr, fifo)[0]
    assert "larger than 64 MiB" in warnings_naming(listing.stderr, huge)[0]
    assert "nested too deeply" in warnings_naming(listing.stderr, deep)[0]

    for name, path in [("deep", deep), ("zero", zero), ("fifo", fifo), ("outside", link)]:
        shown = opus("state", "show", name, cwd=root, timeout=30)
        error = one_line_error(shown)
        assert error.startswith(f"opus: error: state file {path} is damaged"), error
        assert f"`opus state clear {name}` removes it" in error
        assert "secret" not in shown.stdout + shown.stderr
    assert json.loads(opus("state", "show", "good", cwd=root).stdout) == {"status": "succeeded"}
    # the advice can be followed: the id is in a `t-` name, and `state clear ID` removes the file
    assert "`opus state clear zero` removes it" in warnings_naming(listing.stderr, zero)[0]
    assert opus("state", "clear", "zero", cwd=root).stdout.strip() == "cleared 1 record(s)"
    assert not zero.is_symlink() and Path("/dev/zero").exists()
    assert not warnings_naming(opus("state", "list", cwd=root, timeout=30).stderr, zero)


RESUME_PROCESSORS = """
import os
from opus_core import TaskProcessor

class Note(TaskProcessor):
    kind = "Note"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with open("ran.log", "a") as f:
            f.write(task.task_id + "\\n")
        return {task.task_id: 1}
"""


def test_run_resume_over_damaged_records_runs_those_tasks_again(tmp_path: Path) -> None:
    # item 18, through `opus run --resume`
    root = state_project(tmp_path)
    (root / "notes.py").write_text(RESUME_PROCESSORS)
    config = (root / "opus.toml").read_text()
    config = config.replace("[opus]\n", '[opus]\nprocessors = ["notes:Note"]\n', 1)
    for name in ("a", "b", "c"):
        config += f'[[tasks]]\nkind = "Note"\nversion = "v1"\nmetadata = {{ name = "{name}" }}\n'
    (root / "opus.toml").write_text(config)
    first = opus("run", cwd=root)
    assert first.returncode == 0, first.stdout + first.stderr
    directory = root / "state"
    records = FilePersistence(directory).retrieve_all_state_from_persistence()
    [zero] = [directory / file_name(key) for key in records if key.endswith(":a")]
    [fifo] = [directory / file_name(key) for key in records if key.endswith(":b")]
    zero.unlink()
    zero.symlink_to("/dev/zero")
    fifo.unlink()
    os.mkfifo(fifo)

    resumed = opus("run", "--resume", cwd=root, timeout=30)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert (root / "ran.log").read_text().split() == ["a", "b", "c", "a", "b"]  # c restored
    for path in (zero, fifo):
        assert len(warnings_naming(resumed.stderr, path)) == 1, resumed.stderr
        assert path.is_file() and not path.is_symlink()  # replaced by the new record


def test_a_symlinked_or_special_lock_is_refused_and_nothing_is_made_outside(
    tmp_path: Path,
) -> None:
    # item 19
    root = state_project(tmp_path)
    directory = root / "state"
    FilePersistence(directory).save_object_state("web", {"ok": True})
    lock = directory / ".lock"
    lock.unlink()
    target = tmp_path / "elsewhere" / "lock"
    target.parent.mkdir()
    lock.symlink_to(target)
    cleared = opus("state", "clear", "web", cwd=root)
    error = one_line_error(cleared)
    assert f"lock file {lock}" in error and "symbolic link" in error, error
    assert not target.exists()
    with pytest.raises(StateFileError, match="symbolic link"):
        FilePersistence(directory).save_object_state("web", {"ok": False})
    assert not target.exists()
    lock.unlink()
    os.mkfifo(lock)
    with pytest.raises(StateFileError, match=f"lock file {lock}: it is not a regular file"):
        FilePersistence(directory).save_object_state("web", {"ok": False})
    assert FilePersistence(directory).get_object_state("web") == {"ok": True}


def test_a_state_directory_others_can_write_to_is_warned_about(tmp_path: Path) -> None:
    # item 19: the mode of an existing directory is kept (it may be the user's), with a warning
    root = state_project(tmp_path)
    directory = root / "state"
    directory.mkdir()
    directory.chmod(0o777)
    listing = opus("state", "list", cwd=root)
    assert listing.returncode == 0
    [warning] = warnings_naming(listing.stderr, directory)
    assert "writable by other users (mode 0777)" in warning and "chmod 700" in warning
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777
    directory.chmod(0o700)
    assert not warnings_naming(opus("state", "list", cwd=root).stderr, directory)
    fresh = tmp_path / "new" / "state"
    FilePersistence(fresh).save_object_state("x", {})
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_a_record_copied_over_another_is_damaged_not_the_other_ids_state(tmp_path: Path) -> None:
    # item 20
    root = state_project(tmp_path)
    directory = root / "state"
    persistence = FilePersistence(directory)
    for identifier in ("a", "b", "../x", "../y"):
        persistence.save_object_state(identifier, {"who": identifier})
    copied = directory / file_name("b")
    copied.write_bytes((directory / file_name("a")).read_bytes())
    hashed = directory / file_name("../y")
    hashed.write_bytes((directory / file_name("../x")).read_bytes())

    shown = opus("state", "show", "b", cwd=root)
    error = one_line_error(shown)
    assert f"state file {copied} is damaged: it holds the state of 'a'" in error
    assert "'who'" not in shown.stdout
    assert "holds the state of '../x'" in one_line_error(opus("state", "show", "../y", cwd=root))
    listing = opus("state", "list", cwd=root)
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ["../x", "a"]
    assert len(warnings_naming(listing.stderr, copied)) == 1
    assert len(warnings_naming(listing.stderr, hashed)) == 1
    with pytest.raises(StateFileError, match="holds the state of 'a'"):
        persistence.get_object_state("b")


def test_remove_damaged_removes_every_damaged_entry_and_says_how_many(tmp_path: Path) -> None:
    # item 20: the hash-named files cannot be cleared by id, so the persistence removes them
    directory = tmp_path / "state"
    persistence = FilePersistence(directory)
    persistence.save_object_state("good", {"ok": True})
    persistence.save_object_state("../hashed", {"ok": True})
    (directory / file_name("../hashed")).write_text("{ not json")
    (directory / file_name("zero")).symlink_to("/dev/zero")
    os.mkfifo(directory / file_name("fifo"))
    (directory / file_name("dir")).mkdir()  # not opus's to remove: kept, with a warning
    (directory / "notes.txt").write_text("not a record name: never touched")
    assert persistence.remove_damaged() == 3
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".lock", "notes.txt", file_name("good"), file_name("dir")]
    )
    assert Path("/dev/zero").exists()
    assert FilePersistence(directory).retrieve_all_state_from_persistence() == {
        "good": {"ok": True}
    }
    assert persistence.remove_damaged() == 0
    assert FilePersistence(tmp_path / "missing").remove_damaged() == 0
    assert not (tmp_path / "missing").exists()


def test_state_clear_removes_damaged_files_too_and_their_warning_stops(tmp_path: Path) -> None:
    root = state_project(tmp_path)
    persistence = FilePersistence(root / "state")
    persistence.save_object_state("good", {"ok": True})
    damaged = root / "state" / "t-broken.json"
    damaged.write_text("{not json")
    assert warnings_naming(opus("state", "list", cwd=root).stderr, damaged)
    cleared = opus("state", "clear", "--yes", cwd=root)
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 1 record(s) and 1 damaged file(s)" in cleared.stdout
    after = opus("state", "list", cwd=root)
    assert not warnings_naming(after.stderr, damaged) and not damaged.exists()
