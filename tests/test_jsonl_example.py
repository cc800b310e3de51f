"""The worked example of docs/persistence.md: a JSON-lines persistence, as a plugin.

It passes the persistence contract, and `opus` uses it configured through
`[persistence.jsonl]` alone.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

from opus_core import StatePersistence
from opus_core.testing import OpusProject, PersistenceContract

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jsonl_persistence"


def example() -> ModuleType:
    """The example module, imported from its folder (it is not installed)."""
    if str(EXAMPLE) not in sys.path:
        sys.path.append(str(EXAMPLE))
    return importlib.import_module("jsonl_persistence")


class TestJsonlPersistence(PersistenceContract):
    def make_persistence(self, path: Path) -> StatePersistence:
        persistence: StatePersistence = example().JsonlPersistence(path / "state.jsonl")
        return persistence


def test_the_guide_shows_the_example_as_it_is() -> None:
    guide = (EXAMPLE.parent.parent / "docs" / "persistence.md").read_text(encoding="utf-8")
    snippet = guide.split("```python\nclass JsonlPersistence", 1)[1].split("```", 1)[0]
    snippet = "class JsonlPersistence" + snippet
    source = {line.strip() for line in (EXAMPLE / "jsonl_persistence.py").read_text().splitlines()}
    missing = [line for line in snippet.splitlines() if line.strip() not in source]
    assert missing == []


def test_a_torn_last_line_is_skipped_and_the_next_save_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    persistence = example().JsonlPersistence(path)
    persistence.save_object_state("web", {"v": 1})
    with open(path, "a") as file:  # a writer killed mid-line
        file.write('{"id": "db", "state": {"v"')
    persistence.save_object_state("cache", {"v": 3})
    assert persistence.retrieve_all_state_from_persistence() == {"web": {"v": 1}, "cache": {"v": 3}}


def test_compaction_keeps_the_live_state_only(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    persistence = example().JsonlPersistence(path)
    for i in range(300):
        persistence.save_object_state(f"task-{i % 3}", {"i": i})
    persistence.delete_object_state("task-0")
    persistence.persist_all_state()
    assert len(path.read_text().splitlines()) == 2
    assert persistence.retrieve_all_state_from_persistence() == {
        "task-1": {"i": 298},
        "task-2": {"i": 299},
    }


TASKS = """
    [opus]
    persistence = "jsonl"

    [persistence.jsonl]
    path = "state/opus.jsonl"

    [[tasks]]
    kind = "Step"
    version = "v1"
    metadata = { name = "build" }

    [[tasks]]
    kind = "Step"
    version = "v1"
    metadata = { name = "test", dependencies = ["build"] }
    spec = { needs = "ok" }
"""

STEPS = """
    from pathlib import Path

    from opus_core import TaskProcessor, hookimpl


    class Step(TaskProcessor):
        kind = "Step"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            if "needs" in task.spec and not Path(task.spec["needs"]).exists():
                raise RuntimeError(f"{task.spec['needs']} is missing")
            return {task.task_id: "done"}


    @hookimpl
    def opus_register_processors():
        return [Step]
"""


def test_opus_run_keeps_records_and_runs_in_the_file_its_section_names(
    opus_project: OpusProject,
) -> None:
    opus_project.register(example(), name="jsonl")
    opus_project.write("steps.py", STEPS)
    opus_project.register("steps")
    opus_project.write_config(TASKS)
    first = opus_project.run("run")
    assert first.returncode == 1, first.stderr  # `test` fails: no file `ok` yet
    lines = (opus_project.path / "state" / "opus.jsonl").read_text().splitlines()
    saved = {entry["id"]: entry["state"] for entry in map(json.loads, lines) if "state" in entry}
    assert saved["opus-run:apply:default:build"]["status"] == "succeeded"
    assert saved["opus-run:apply:default:test"]["status"] == "failed"

    listed = opus_project.run("state", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "build" in listed.stdout and "test" in listed.stdout
    runs = opus_project.run("runs", "list", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [run["status"] for run in json.loads(runs.stdout)] == ["failed"]

    opus_project.write("ok", "")
    resumed = opus_project.run("run", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    statuses = {t["task"]: t["status"] for t in json.loads(resumed.stdout)["tasks"]}
    assert statuses == {"build": "restored", "test": "succeeded"}


def test_its_options_come_from_its_persistence_section_not_plugins(
    opus_project: OpusProject,
) -> None:
    opus_project.register(example(), name="jsonl")
    opus_project.write_config('[opus]\npersistence = "jsonl"\n[plugins.jsonl]\npath = "x.jsonl"\n')
    result = opus_project.run("run")
    assert result.returncode == 2
    assert "plugins.jsonl" in result.stderr and "takes no options" in result.stderr
