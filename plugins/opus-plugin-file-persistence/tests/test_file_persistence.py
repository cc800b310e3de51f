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
from cli_helpers import opus
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
    with pytest.raises(StateFileError, match=f"state file {damaged} is unreadable"):
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
    assert not list(directory.glob(".tmp-*"))  # leftovers of killed writes were cleaned up


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
    assert opus("state", "clear", cwd=tmp_path).stdout.strip() == "cleared 1 record(s)"
    assert opus("state", "list", cwd=tmp_path).stdout.strip() == "no state"
