"""Run records and resume: what is saved after each task, what a resumed run skips."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest
from cli_helpers import opus
from harness import Harness

from opus_core import StatePersistence, Task, TaskProcessor
from opus_core.records import record_id


def chain(tmp_path: Path, persistence: StatePersistence, b_spec: dict | None = None) -> Harness:
    h = Harness(tmp_path, state_persistence=persistence)
    h.add("a", spec={"publish": {"from_a": 1}})
    h.add("b", dependencies=["a"], spec=b_spec or {"publish": {"from_b": 2}})
    h.add("c", dependencies=["b"], spec={"publish": {"from_c": 3}})
    h.add("side", spec={"publish": {"side": True}})
    return h


def test_each_task_is_recorded_as_it_finishes(tmp_path: Path) -> None:
    persistence = StatePersistence()
    h = chain(tmp_path, persistence)
    h.add("bad", spec={"fail": "no"}, dependencies=["a"])
    h.run()
    record = persistence.get_object_state(record_id("apply", "default", "b"))
    assert record["status"] == "succeeded" and record["attempts"] == 1
    assert record["checksum"] == h.tasks.tasks[1].checksum
    assert record["published"] == {"from_b": 2}
    assert (
        record["finished_at"] > 0
        and record["command"] == "apply"
        and record["context"] == "default"
    )
    bad = persistence.get_object_state(record_id("apply", "default", "bad"))
    assert bad["status"] == "failed" and "RuntimeError: no" in bad["error"]
    # what a reader gets is a copy: changing it changes no record
    record["published"]["from_b"] = 99
    again = persistence.get_object_state(record_id("apply", "default", "b"))
    assert again["published"] == {"from_b": 2}
    assert persistence.state[record_id("apply", "default", "b")] == again


def test_resume_skips_what_succeeded_and_restores_its_values(tmp_path: Path) -> None:
    persistence = StatePersistence()
    chain(tmp_path / "first", persistence).run()
    h = chain(tmp_path / "second", persistence)
    h.add("new", dependencies=["c"])
    report = h.tasks.process_context(resume=True)
    assert report.ok
    assert h.started() == ["new"]
    assert sorted(r.task_id for r in report if r.resumed) == ["a", "b", "c", "side"]
    assert report["a"].attempts == 0 and report["a"].status == "restored"
    assert h.seen("new") == {"from_a": 1, "from_b": 2, "from_c": 3}
    assert h.tasks.key_value_store.store == {"from_a": 1, "from_b": 2, "from_c": 3, "side": True}
    assert "4 restored" in report.summary()


def test_a_changed_spec_reruns_that_task_and_everything_downstream(tmp_path: Path) -> None:
    persistence = StatePersistence()
    chain(tmp_path / "first", persistence).run()
    h = chain(tmp_path / "second", persistence, b_spec={"publish": {"from_b": "changed"}})
    report = h.tasks.process_context(resume=True)
    assert sorted(h.started()) == ["b", "c"]
    assert report["a"].resumed and report["side"].resumed
    assert h.seen("c") == {"from_a": 1, "from_b": "changed"}


def test_failed_tasks_and_their_dependents_run_again(tmp_path: Path) -> None:
    persistence = StatePersistence()
    chain(tmp_path / "first", persistence, b_spec={"fail": "flaky infra"}).run()
    h = chain(tmp_path / "second", persistence)
    assert h.tasks.process_context(resume=True).ok
    assert sorted(h.started()) == ["b", "c"]


def test_records_are_per_command_and_context(tmp_path: Path) -> None:
    persistence = StatePersistence()
    chain(tmp_path / "first", persistence).run(context="dev")
    h = chain(tmp_path / "second", persistence)
    h.tasks.process_context(context="prod", resume=True)
    assert sorted(h.started()) == ["a", "b", "c", "side"]


def test_unnamed_tasks_always_run(tmp_path: Path) -> None:
    persistence = StatePersistence()
    for attempt in ("first", "second"):
        h = Harness(tmp_path / attempt, state_persistence=persistence)
        h.add(spec={"publish": {"x": 1}})
        h.tasks.process_context(resume=True)
        assert len(h.started()) == 1


def test_values_that_are_not_json_are_not_restored_so_the_task_runs_again(tmp_path: Path) -> None:
    class Opaque(TaskProcessor):
        kind = "Opaque"
        runs = 0

        def process_task(self, task, command, context, key_value_store, state_persistence):
            type(self).runs += 1
            return {"lock": threading.Lock()}

    persistence = StatePersistence()
    for _ in range(2):
        h = Harness(tmp_path, state_persistence=persistence)
        h.tasks.register_task_processor(Opaque())
        h.tasks.add_task(Task("Opaque", "v1", metadata={"name": "opaque"}))
        assert h.tasks.process_context(resume=True).ok
    assert Opaque.runs == 2
    assert (
        persistence.get_object_state(record_id("apply", "default", "opaque"))["published"] is None
    )


# -- through the command line, on the file persistence ---------------------------------------

PROCESSORS = """
import os, signal
from pathlib import Path
from opus_core import TaskProcessor

class Step(TaskProcessor):
    kind = "Step"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        kill_before = os.environ.get("KILL_BEFORE")
        if kill_before == task.task_id:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(os.environ["RAN_LOG"], "a") as f:
            f.write(task.task_id + "\\n")
            f.flush()
            os.fsync(f.fileno())
        return {task.task_id.replace("-", "_"): key_value_store.store.get("count", 0) + 1,
                "count": key_value_store.store.get("count", 0) + 1}
"""

KILL_MID_WRITE = """
import os, signal
_replace = os.replace
_count = 0
def replace(src, dst, *args, **kwargs):
    global _count
    if str(dst).endswith(".json"):
        _count += 1
        if _count == int(os.environ["KILL_AT_WRITE"]):
            os.kill(os.getpid(), signal.SIGKILL)   # the temporary file is written, not yet renamed
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
"""

STEPS = 10


def crash_project(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text(textwrap.dedent(PROCESSORS))
    lines = [
        '[opus]\npersistence = "file"\nprocessors = ["steps:Step"]\n',
        '[persistence.file]\ndirectory = "state"\n',
    ]
    for i in range(STEPS):
        deps = f'dependencies = ["step-{i - 1}"]' if i else "dependencies = []"
        lines.append(
            f'[[tasks]]\nkind = "Step"\nversion = "v1"\nmetadata = {{ name = "step-{i}", {deps} }}\n'
        )
    (tmp_path / "opus.toml").write_text("\n".join(lines))
    return tmp_path


def run_opus(
    root: Path, *args: str, process: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """`opus run ARGS` in `root`; a real process (`process`) for a run that kills itself or
    that a `sitecustomize.py` on `PYTHONPATH` prepares as its interpreter starts."""
    environment = {"XDG_CONFIG_HOME": str(root / ".user"), "RAN_LOG": str(root / "ran.log")}
    return opus("run", *args, cwd=root, env={**environment, **env}, process=process)


def check_state_files(root: Path) -> None:
    for path in (root / "state").glob("*.json"):
        json.loads(path.read_text())  # never torn


@pytest.mark.parametrize("k", [0, 3, 7, 9])
def test_killed_after_task_k_then_resumed_runs_every_task_once(tmp_path: Path, k: int) -> None:
    root = crash_project(tmp_path)
    first = run_opus(root, KILL_BEFORE=f"step-{k}", process=True)
    assert first.returncode == -signal.SIGKILL
    check_state_files(root)
    second = run_opus(root, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    ran = (root / "ran.log").read_text().split()
    assert sorted(ran) == sorted(f"step-{i}" for i in range(STEPS))  # each exactly once
    assert f"{k} restored" in second.stdout or k == 0
    check_state_files(root)


@pytest.mark.parametrize("write", [2, 5, 9])  # write 1 is the run's entry in the history
def test_killed_in_the_middle_of_a_state_write_then_resumed(tmp_path: Path, write: int) -> None:
    root = crash_project(tmp_path)
    (root / "sitecustomize.py").write_text(KILL_MID_WRITE)
    first = run_opus(root, KILL_AT_WRITE=str(write), PYTHONPATH=str(root), process=True)
    assert first.returncode == -signal.SIGKILL
    assert list((root / "state").glob(".tmp-*"))  # it died holding a half-done write
    check_state_files(root)
    second = run_opus(root, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    ran = (root / "ran.log").read_text().split()
    assert set(ran) == {f"step-{i}" for i in range(STEPS)}
    repeated = [name for name in set(ran) if ran.count(name) > 1]
    assert repeated == [f"step-{write - 2}"]  # only the one whose record write was cut short
    assert not list((root / "state").glob(".tmp-*"))
    check_state_files(root)


def test_state_clear_forgets_so_everything_runs_again(tmp_path: Path) -> None:
    root = crash_project(tmp_path)
    assert run_opus(root).returncode == 0
    listing = opus("state", "list", cwd=root)
    assert listing.stdout.count("succeeded") == STEPS
    resumed = run_opus(root, "--resume")
    assert f"{STEPS} restored" in resumed.stdout and "restored" in resumed.stdout
    assert opus("state", "clear", "--yes", cwd=root).stdout.strip() == f"cleared {STEPS} record(s)"
    assert run_opus(root, "--resume").stdout.count("restored") == 0
    assert len((root / "ran.log").read_text().split()) == 2 * STEPS


def test_a_full_disk_stops_the_run_with_one_line_and_earlier_state_intact(tmp_path: Path) -> None:
    root = crash_project(tmp_path)
    assert run_opus(root).returncode == 0
    before = {p.name: p.read_text() for p in (root / "state").glob("*.json")}
    (root / "sitecustomize.py").write_text(
        "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
    )
    (root / "ran.log").unlink()
    result = run_opus(root, PYTHONPATH=str(root), process=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("opus: ")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    message = errors[0]
    # The run's entry in the history is its first write: nothing runs without it.
    assert "run not started: its history could not be saved" in message
    assert "cannot save state for 'opus-history:" in message
    assert "the previous state is intact" in message
    after = {p.name: p.read_text() for p in (root / "state").glob("*.json")}
    assert after == before
    assert not (root / "ran.log").exists()


def test_dry_run_with_resume_lists_what_would_be_restored(tmp_path: Path) -> None:
    root = crash_project(tmp_path)
    assert run_opus(root).returncode == 0
    (root / "opus.toml").write_text(
        (root / "opus.toml")
        .read_text()
        .replace(
            'metadata = { name = "step-7", dependencies = ["step-6"] }',
            'metadata = { name = "step-7", dependencies = ["step-6"] }\nspec = { changed = true }',
        )
    )
    plan = run_opus(root, "--dry-run", "--resume")
    assert plan.returncode == 0, plan.stderr
    would = {
        line.split()[1]: line.split()[-1] for line in plan.stdout.splitlines() if line[:1].isdigit()
    }
    assert [would[f"step-{i}"] for i in range(STEPS)] == ["restore"] * 7 + ["run"] * 3
    assert "7 task(s) would be restored, not run" in plan.stdout
    as_json = json.loads(run_opus(root, "--dry-run", "--resume", "--json").stdout)
    assert [t["restored"] for t in as_json["tasks"]] == [True] * 7 + [False] * 3
    assert "would be restored" not in run_opus(root, "--dry-run").stdout  # without --resume
    assert (root / "ran.log").read_text().split() == [f"step-{i}" for i in range(STEPS)]


def test_resume_with_the_memory_persistence_warns(tmp_path: Path) -> None:
    root = crash_project(tmp_path)
    (root / "opus.toml").write_text(
        (root / "opus.toml").read_text().replace('persistence = "file"', 'persistence = "memory"')
    )
    result = run_opus(root, "--resume")
    assert result.returncode == 0
    assert "opus: warning: --resume with the memory persistence restores nothing" in result.stderr
