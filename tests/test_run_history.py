"""Run history: every run recorded through the persistence, and `opus runs list|show|prune`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import OPUS, one_line_error, opus
from harness import Harness
from opus_plugin_file_persistence import FilePersistence

from opus_core import OpusError, StatePersistence, Task, TaskProcessor, Tasks
from opus_core.cli.output import printable
from opus_core.history import RUN_STATUSES, find_run, for_json
from opus_core.persistence import MemoryPersistence
from opus_core.persistence.memory import MEMORY_RUNS
from opus_core.persistence.sqlite import SqlitePersistence


class DictPersistence(StatePersistence):
    """A third-party persistence that implements only the state part of the contract."""

    name = "dict"

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, str] = {}

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        return {key: json.loads(text) for key, text in self.saved.items()}

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        text = self.saved.get(object_identifier)
        return {} if text is None else dict(json.loads(text))

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        self.saved[object_identifier] = json.dumps(data)

    def delete_object_state(self, object_identifier: str) -> bool:
        return self.saved.pop(object_identifier, None) is not None


class ReadCountingPersistence(MemoryPersistence):
    """The in-memory persistence with one method of its own: its own fast paths (runs and
    records kept as objects) and the overridden method must agree on where runs are."""

    reads = 0

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        self.reads += 1
        return super().retrieve_all_state_from_persistence()


KINDS = ["memory", "file", "sqlite", "third-party", "memory, one method overridden"]


def persistences(tmp_path: Path) -> dict[str, StatePersistence]:
    return {
        "memory": StatePersistence(),
        "file": FilePersistence(tmp_path / "files"),
        "sqlite": SqlitePersistence(tmp_path / "state.db"),
        "third-party": DictPersistence(),
        "memory, one method overridden": ReadCountingPersistence(),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_run_is_recorded_with_every_task_and_attempt(tmp_path: Path, kind: str) -> None:
    persistence = persistences(tmp_path)[kind]
    h = Harness(tmp_path, state_persistence=persistence)
    h.add("db")
    h.add("web", spec={"fail_attempts": 1}, dependencies=["db"], retries=2)
    h.add("bad", spec={"fail": "bad is broken"}, dependencies=["db"])
    h.add("after", dependencies=["bad"])
    before = time.time()
    report = h.run()
    assert report.run_id is not None
    run = find_run(persistence)
    assert run["id"] == report.run_id
    assert run["status"] == "failed"
    assert (run["command"], run["context"], run["pid"]) == ("apply", "default", os.getpid())
    assert (run["runner"], run["persistence"]) == ("sequential", persistence.name)
    assert before <= run["started_at"] <= run["ended_at"] <= time.time()
    assert run["counts"] == {"succeeded": 2, "failed": 1, "skipped": 1}
    tasks = {task["name"]: task for task in run["tasks"]}
    assert [task["name"] for task in run["tasks"]] == ["db", "web", "bad", "after"]
    web = tasks["web"]
    assert (web["status"], web["attempts"], web["dependencies"]) == ("succeeded", 2, ["db"])
    assert [(a["attempt"], a["status"]) for a in web["attempt_log"]] == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    first, second = web["attempt_log"]
    assert first["error"] and first["started_at"] <= first["ended_at"] <= second["started_at"]
    assert web["started_at"] == first["started_at"] and web["ended_at"] == second["ended_at"]
    bad = tasks["bad"]
    assert bad["status"] == "failed" and "Traceback" in bad["traceback"]
    assert bad["error"] == bad["attempt_log"][0]["error"]
    after = tasks["after"]
    assert (after["status"], after["attempts"], after["attempt_log"]) == ("skipped", 0, [])
    assert after["started_at"] is None and after["duration"] is None
    assert "tasks" not in persistence.list_runs()[0]


@pytest.mark.parametrize("kind", KINDS)
def test_runs_are_listed_newest_first_found_by_prefix_and_pruned(tmp_path: Path, kind: str) -> None:
    persistence = persistences(tmp_path)[kind]
    ids = []
    for _ in range(3):
        h = Harness(tmp_path, state_persistence=persistence)
        h.add("a")
        ids.append(h.run().run_id)
        time.sleep(0.002)  # ids are sorted to the millisecond
    assert [run["id"] for run in persistence.list_runs()] == ids[::-1]
    assert [run["id"] for run in persistence.list_runs(limit=2)] == ids[:0:-1]
    assert find_run(persistence, ids[1])["id"] == ids[1]
    assert find_run(persistence, ids[0][:-3])["id"] == ids[0]
    with pytest.raises(OpusError, match="is ambiguous"):
        find_run(persistence, ids[0][:8])
    with pytest.raises(OpusError, match=r"no run 'nope'.*`opus runs list` shows them"):
        find_run(persistence, "nope")
    assert persistence.prune_runs(keep=1) == 2
    assert [run["id"] for run in persistence.list_runs()] == [ids[2]]
    assert persistence.load_run(ids[0]) is None
    assert persistence.prune_runs(keep=0) == 1
    with pytest.raises(OpusError, match="no runs recorded yet"):
        find_run(persistence)


def test_a_run_stopped_from_another_thread_is_recorded_stopped(tmp_path: Path) -> None:
    persistence = StatePersistence()
    h = Harness(tmp_path, state_persistence=persistence)
    h.add("first", spec={"release": str(tmp_path / "stopped")})  # runs until the stop
    h.add("second", dependencies=["first"])
    report = h.run_and_stop(running=1, release=tmp_path / "stopped")
    assert report.interrupted and report["second"].status == "cancelled"
    assert find_run(persistence, report.run_id or "")["status"] == "stopped"


def test_memory_keeps_only_its_newest_runs() -> None:
    persistence = StatePersistence()
    for i in range(MEMORY_RUNS + 5):
        persistence.save_run({"id": f"run-{i:03d}", "status": "succeeded", "tasks": []})
    runs = persistence.list_runs()
    assert len(runs) == MEMORY_RUNS and runs[0]["id"] == f"run-{MEMORY_RUNS + 4:03d}"


def test_json_times_are_iso_8601() -> None:
    converted = for_json(
        {
            "id": "x",
            "started_at": 0.0,
            "ended_at": None,
            "tasks": [{"started_at": 1.5, "ended_at": 2.0, "attempt_log": [{"started_at": 1.5}]}],
        }
    )
    assert converted["started_at"] == "1970-01-01T00:00:00.000+00:00"
    assert converted["ended_at"] is None
    assert converted["tasks"][0]["ended_at"] == "1970-01-01T00:00:02.000+00:00"
    assert converted["tasks"][0]["attempt_log"][0]["started_at"] == "1970-01-01T00:00:01.500+00:00"


# -- the command line ---------------------------------------------------------------------------

STEPS = """
import os, time
from opus_core import TaskProcessor

class Step(TaskProcessor):
    kind = "Step"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        if task.spec.get("fail"):
            raise ValueError(f"{task.task_id} is broken")
        if task.spec.get("hang"):
            print("hanging", flush=True)
            time.sleep(60)
"""


def project(tmp_path: Path, persistence: str = "", fail: bool = False, hang: bool = False) -> Path:
    (tmp_path / "steps.py").write_text(STEPS)
    lines = [f'[opus]\nprocessors = ["steps:Step"]\n{persistence}']
    for name, spec in (("build", ""), ("test", f"fail = {str(fail).lower()}"), ("ship", "")):
        deps = {"build": "[]", "test": '["build"]', "ship": '["test"]'}[name]
        hangs = "hang = true" if hang and name == "test" else ""
        lines.append(
            f'[[tasks]]\nkind = "Step"\nversion = "v1"\n'
            f'metadata = {{ name = "{name}", dependencies = {deps} }}\n'
            f"[tasks.spec]\n{spec}\n{hangs}\n"
        )
    (tmp_path / "opus.toml").write_text("\n".join(lines))
    return tmp_path


@pytest.mark.parametrize("persistence", ["", 'persistence = "file"\n'])
def test_opus_runs_list_show_and_prune(tmp_path: Path, persistence: str) -> None:
    root = project(tmp_path, persistence)
    assert opus("runs", cwd=root).stdout.strip() == "no runs recorded (`opus run` records one)"
    assert opus("run", cwd=root).returncode == 0
    project(tmp_path, persistence, fail=True)
    assert opus("run", "--context", "prod", cwd=root).returncode == 1

    listing = opus("runs", "list", cwd=root)
    assert listing.returncode == 0, listing.stderr
    header, newest, oldest = listing.stdout.splitlines()
    assert header.split() == ["RUN", "STATUS", "STARTED", "DURATION", "COMMAND", "TASKS"]
    assert newest.split()[1] == "failed" and "apply/prod" in newest
    assert "1 succeeded, 1 failed, 1 skipped" in newest
    assert oldest.split()[1] == "succeeded" and "3 succeeded" in oldest

    runs = json.loads(opus("runs", "list", "--json", cwd=root).stdout)
    assert [run["status"] for run in runs] == ["failed", "succeeded"]
    assert runs[0]["started_at"].endswith("+00:00") and "T" in runs[0]["started_at"]
    assert runs[0]["config"] == str(root / "opus.toml")
    assert all("tasks" not in run for run in runs)
    assert len(json.loads(opus("runs", "list", "--limit", "1", "--json", cwd=root).stdout)) == 1

    shown = opus("runs", "show", cwd=root)  # latest
    assert shown.returncode == 0, shown.stderr
    assert f"run:         {runs[0]['id']}" in shown.stdout
    assert "test   failed     1         " in shown.stdout
    assert "ValueError: test is broken" in shown.stdout
    assert "ship   skipped" in shown.stdout

    older = json.loads(opus("runs", "show", runs[1]["id"][:-2], "--json", cwd=root).stdout)
    assert older["id"] == runs[1]["id"] and older["status"] == "succeeded"
    assert [task["name"] for task in older["tasks"]] == ["build", "test", "ship"]
    assert older["tasks"][2]["dependencies"] == ["test"]
    assert older["tasks"][0]["attempt_log"][0]["ended_at"].endswith("+00:00")

    missing = one_line_error(opus("runs", "show", "20991231", cwd=root))
    assert missing.startswith("opus: error: no run '20991231'")
    assert "opus runs list" in missing
    assert "is ambiguous" in one_line_error(opus("runs", "show", runs[0]["id"][:4], cwd=root))
    assert "--keep" in one_line_error(opus("runs", "prune", "--keep", "many", cwd=root))

    pruned = opus("runs", "prune", "--keep", "1", cwd=root)
    assert pruned.stdout.strip() == "pruned 1 run(s), kept at most 1"
    kept = json.loads(opus("runs", "list", "--json", cwd=root).stdout)
    assert [run["id"] for run in kept] == [runs[0]["id"]]
    assert opus("runs", cwd=root).stdout.splitlines()[1].startswith(runs[0]["id"])


def test_a_huge_count_means_all_runs_and_a_limit_of_0_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert opus("run", cwd=root).returncode == 0
    assert opus("run", cwd=root).returncode == 0
    huge = "99999999999999999999999"
    listed = opus("runs", "list", "--limit", huge, "--json", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2
    pruned = opus("runs", "prune", "--keep", huge, cwd=root)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 0 run(s)")
    refused = one_line_error(opus("runs", "list", "--limit", "0", cwd=root))
    assert refused == "opus: error: --limit needs a number of runs to show, 1 or more, not 0"


HOSTILE_NAME = "wipe\x1b[2Jout\rover\x7fdel\x9bcsi\u202eevil\tend"
LONG_NAME = "n" * 10_000


def test_control_characters_in_names_are_shown_escaped_and_long_cells_cut(
    tmp_path: Path,
) -> None:
    assert printable(HOSTILE_NAME) == ("wipe\\x1b[2Jout\\rover\\x7fdel\\x9bcsi\\u202eevil\\tend")
    assert printable("задача-✓ ok") == "задача-✓ ok"
    (tmp_path / "steps.py").write_text(STEPS)
    toml = ['[opus]\nprocessors = ["steps:Step"]\n']
    for name in (HOSTILE_NAME, LONG_NAME):
        quoted = json.dumps(name)  # a JSON string is a TOML basic string
        toml.append(f'[[tasks]]\nkind = "Step"\nversion = "v1"\nmetadata = {{name = {quoted}}}')
    (tmp_path / "opus.toml").write_text("\n".join(toml))
    narrow = {"COLUMNS": "100"}
    outputs = {
        "run": opus("run", "-v", "--no-progress", cwd=tmp_path, env=narrow),
        "runs show": opus("runs", "show", cwd=tmp_path, env=narrow),
        "state list": opus("state", "list", cwd=tmp_path, env=narrow),
    }
    for command, result in outputs.items():
        assert result.returncode == 0, (command, result.stderr)
        assert "wipe\\x1b[2Jout\\rover" in result.stdout, command  # long cells wrap
        assert not any(c in result.stdout for c in "\x1b\r\x7f\x9b\u202e\t"), command
        assert max(len(line) for line in result.stdout.splitlines()) <= 100, command
        assert "nnn…" in result.stdout and LONG_NAME not in result.stdout, command
    piped = opus("runs", "show", cwd=tmp_path)  # no terminal: cells cut at MAX_CELL
    assert max(len(line) for line in piped.stdout.splitlines()) < 300
    shown = json.loads(opus("runs", "show", "--json", cwd=tmp_path).stdout)
    assert [task["name"] for task in shown["tasks"]] == [HOSTILE_NAME, LONG_NAME]


def test_a_killed_run_is_visible_and_shown_interrupted(tmp_path: Path) -> None:
    root = project(tmp_path, hang=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPUS_")}
    env["XDG_CONFIG_HOME"] = str(root / ".user-config")
    # XDG_STATE_HOME is the test's own (conftest): `opus` below and this process share it.
    proc = subprocess.Popen(
        [str(OPUS), "run", "--no-progress"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "hanging"
    live = json.loads(opus("runs", "show", "--json", cwd=root).stdout)
    assert live["status"] == "running" and live["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    shown = json.loads(opus("runs", "show", "--json", cwd=root).stdout)
    assert shown["status"] == "interrupted" and shown["ended_at"] is None
    listing = opus("runs", "list", cwd=root).stdout
    assert "interrupted" in listing.splitlines()[1]
    from opus_core.config import project_state_dir

    stored = SqlitePersistence(project_state_dir(root / "opus.toml") / "state.db")
    assert stored.list_runs()[0]["status"] == "running"  # what is stored is left as it was


def test_run_statuses_are_the_documented_ones() -> None:
    assert RUN_STATUSES == ("running", "succeeded", "failed", "interrupted", "stopped")


def test_tasks_built_in_python_record_runs_in_memory() -> None:
    class Hello(TaskProcessor):
        kind = "Hello"

        def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
            return {"greeting": "hi"}

    tasks = Tasks()
    tasks.register_task_processor(Hello)
    tasks.add_task(Task("Hello", "v1", metadata={"name": "hello"}))
    report = tasks.process_context(context="dev")
    run = find_run(tasks.state_persistence, "latest")
    assert run["id"] == report.run_id and run["context"] == "dev"
    assert run["persistence"] == "memory" and run["config"] is None
    assert run["pid"] == os.getpid()


FAILING_STEP = """
from opus_core import TaskProcessor


class Boom(TaskProcessor):
    kind = "Boom"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        raise RuntimeError("bad \\x1b[2J\\x1b[31mred\\x07 bell")
"""


def test_control_characters_in_errors_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(FAILING_STEP)
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["boom:Boom"]\n'
        '[[tasks]]\nkind = "Boom"\nversion = "v1"\nmetadata = {name = "boom", retries = 1}\n'
    )
    for args in (("run", "--no-progress"), ("run", "--no-progress", "-v", "--tb", "long")):
        result = opus(*args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        everything = result.stdout + result.stderr
        assert "RuntimeError: bad \\x1b[2J\\x1b[31mred\\x07 bell" in everything
        assert not any(c in everything for c in "\x1b\x07"), args
