"""`PersistenceContract`: the conformance tests every persistence passes.

Subclass it in a test module (the subclass's name starts with `Test`, so pytest
collects it) and say how to make the persistence under test::

    from pathlib import Path

    from opus_core.testing import PersistenceContract
    from opus_plugin_mine import MyPersistence


    class TestMyPersistence(PersistenceContract):
        def make_persistence(self, path: Path) -> MyPersistence:
            return MyPersistence(directory=path)

Every test is named for the promise it checks (docs/persistence.md lists them).
They use real files, real processes and a real engine run; nothing is mocked.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from opus_core.engine import Tasks
from opus_core.errors import OpusError
from opus_core.logger import LoggerWrapper
from opus_core.manifest import Task
from opus_core.persistence import RUN_RECORDS, StatePersistence
from opus_core.processor import TaskProcessor
from opus_core.results import TaskStatus
from opus_core.store import KeyValueStore

# Values that come back exactly as they went in (the value rules of docs/persistence.md).
ROUND_TRIP: dict[str, Any] = {
    "nested": {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}, "empty": {}, "list": []},
    "unicode": 'naïve café ☃ 中文 🎉 \u00a0 \t\n "quoted" \\ / \x00',
    "ключ 🔑": "a key that is not ASCII",
    "": "the empty key",
    "big": 2**100,
    "negative big": -(2**80) - 1,
    "int": -7,
    "floats": [0.1, 1e308, 5e-324, -2.5, 1.0, 0.0],
    "bools": [True, False],
    "none": None,
    "mixed": [1, "1", 1.0, True, None, {"1": 1}],
}

# Values JSON would change or cannot hold: each is refused with an OpusError.
REFUSED: dict[str, Any] = {
    "nan": float("nan"),
    "infinity": math.inf,
    "minus infinity": -math.inf,
    "a tuple": (1, 2),
    "an int key": {1: "one"},
    "a None key": {None: "none"},
    "a set": {1, 2},
    "bytes": b"raw",
    "an object": object(),
}


def same(left: Any, right: Any) -> bool:
    """`left == right`, and of the same types all the way down (`True` is not `1`)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    return bool(left == right)


class ContractPublish(TaskProcessor):
    """Publishes `spec["value"]` under the task's name; fails when `spec["fail"]` is true."""

    kind = "ContractPublish"
    versions = ("v1",)
    commands = ("apply",)

    def process_task(
        self,
        task: Task,
        command: str,
        context: str = "default",
        key_value_store: KeyValueStore | None = None,
        state_persistence: StatePersistence | None = None,
    ) -> dict[str, Any]:
        """Publish the value, or fail as the spec asks."""
        if task.spec.get("fail"):
            raise RuntimeError(f"{task.task_id} fails as asked")
        return {task.task_id: task.spec["value"]}


def _write_at_once(payload: bytes, who: str, count: int, barrier: Any, report: str) -> None:
    """In a child process: a copy of the persistence, `count` saves of its own and of one
    shared identifier, and a run; exits 1, saying why in the file `report`, if anything
    raises or any of its own saves does not read back."""
    try:
        persistence: StatePersistence = pickle.loads(payload)
        barrier.wait(timeout=60)
        for i in range(count):
            persistence.save_object_state(f"{who}-{i}", {"who": who, "i": i})
            persistence.save_object_state("shared", {"who": who, "i": i})
        persistence.save_run({"id": f"run-{who}", "status": "succeeded", "tasks": []})
        persistence.persist_all_state()
        lost = [i for i in range(count) if persistence.get_object_state(f"{who}-{i}").get("i") != i]
        problems = [f"saves of {who!r} that do not read back: {lost}"] if lost else []
        if persistence.load_run(f"run-{who}") is None:
            problems.append(f"the run 'run-{who}' it saved does not load")
    except BaseException:
        import traceback

        problems = [traceback.format_exc()]
    if problems:
        Path(report).write_text("\n".join(problems), encoding="utf-8")
    sys.exit(1 if problems else 0)


class PersistenceContract:
    """The persistence contract's tests; a subclass says how to make the persistence.

    Not collected by itself (its name does not start with `Test`); subclass it as
    `TestMyPersistence` and implement `make_persistence`.
    """

    def make_persistence(self, path: Path) -> StatePersistence:
        """The persistence under test, keeping its store at `path` (a folder of the test's
        own, not created yet; a file or folder inside it, or itself, is the store).

        Called again with the same `path`, it gives a persistence on the same store: a
        new instance for a store outside the object (files, a database), the same
        instance for a store that lives in the object (`memory`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_persistence(self, path) to say which "
            "persistence the contract tests"
        )

    @pytest.fixture
    def store(self, tmp_path: Path) -> Path:
        """Where the persistence under test keeps its store."""
        return tmp_path / "store"

    @pytest.fixture
    def persistence(self, store: Path) -> StatePersistence:
        """The persistence under test, on an empty store."""
        return self.make_persistence(store)

    # -- the class -----------------------------------------------------------------------

    def test_it_is_a_state_persistence_with_a_name(self, persistence: StatePersistence) -> None:
        assert isinstance(persistence, StatePersistence)
        assert isinstance(type(persistence).name, str) and type(persistence).name
        assert isinstance(type(persistence).supports_concurrent_processes, bool)

    # -- state -----------------------------------------------------------------------------

    def test_an_identifier_never_saved_reads_as_an_empty_dict(
        self, persistence: StatePersistence
    ) -> None:
        assert persistence.get_object_state("never-saved") == {}
        assert persistence.retrieve_all_state_from_persistence() == {}

    def test_saved_state_reads_back_exactly_as_it_went_in(
        self, persistence: StatePersistence
    ) -> None:
        persistence.save_object_state("web", ROUND_TRIP)
        assert same(persistence.get_object_state("web"), ROUND_TRIP)
        assert same(persistence.retrieve_all_state_from_persistence()["web"], ROUND_TRIP)

    @pytest.mark.parametrize("what", list(REFUSED))
    def test_state_json_would_alter_is_refused_naming_the_identifier(
        self, persistence: StatePersistence, what: str
    ) -> None:
        persistence.save_object_state("web", {"v": 1})
        with pytest.raises(OpusError, match="'web'"):
            persistence.save_object_state("web", {"outer": [{"value": REFUSED[what]}]})
        assert same(persistence.get_object_state("web"), {"v": 1})  # the old state is intact

    def test_many_states_read_at_once_are_what_each_reads_alone(
        self, persistence: StatePersistence
    ) -> None:
        persistence.save_object_state("web", ROUND_TRIP)
        persistence.save_object_state("db", {"replicas": 1})
        found = persistence.get_object_states(["db", "never-saved", "web", "db"])
        assert sorted(found) == ["db", "web"]
        assert same(found["web"], ROUND_TRIP) and found["db"] == {"replicas": 1}
        found["db"]["replicas"] = 9  # the caller's own copy
        assert persistence.get_object_states(["db"]) == {"db": {"replicas": 1}}
        assert persistence.get_object_states([]) == {}

    def test_saving_again_replaces_the_whole_state(self, persistence: StatePersistence) -> None:
        persistence.save_object_state("web", {"replicas": 3, "image": "web:1"})
        persistence.save_object_state("web", {"replicas": 5})
        assert persistence.get_object_state("web") == {"replicas": 5}

    def test_what_is_read_back_is_a_copy_the_caller_owns(
        self, persistence: StatePersistence
    ) -> None:
        tags = ["a"]
        persistence.save_object_state("web", {"tags": tags, "nested": {"x": 1}})
        tags.append("changed after saving")
        read = persistence.get_object_state("web")
        read["nested"]["x"] = "changed after reading"
        persistence.retrieve_all_state_from_persistence()["web"]["tags"].append("again")
        assert persistence.get_object_state("web") == {"tags": ["a"], "nested": {"x": 1}}

    def test_identifiers_are_kept_apart_whatever_they_contain(
        self, persistence: StatePersistence
    ) -> None:
        identifiers = [
            "web",
            "Web",
            "../../etc/passwd",
            "a/b\\c",
            "with space",
            ".hidden",
            "ünï 🎉",
            "x" * 300,
            f"{RUN_RECORDS}apply:default:web",
        ]
        for index, identifier in enumerate(identifiers):
            persistence.save_object_state(identifier, {"index": index, "id": identifier})
        everything = persistence.retrieve_all_state_from_persistence()
        assert {k: v for k, v in everything.items() if k in identifiers} == {
            identifier: {"index": index, "id": identifier}
            for index, identifier in enumerate(identifiers)
        }
        for index, identifier in enumerate(identifiers):
            assert persistence.get_object_state(identifier) == {"index": index, "id": identifier}

    def test_an_identifier_that_is_not_a_non_empty_string_is_refused(
        self, persistence: StatePersistence
    ) -> None:
        for bad in ("", None, 3):
            with pytest.raises(OpusError):
                persistence.save_object_state(bad, {"v": 1})  # type: ignore[arg-type]
        with pytest.raises(OpusError, match="'web'"):
            persistence.save_object_state("web", ["not", "a", "dict"])  # type: ignore[arg-type]

    def test_delete_forgets_and_says_whether_there_was_state(
        self, persistence: StatePersistence
    ) -> None:
        persistence.save_object_state("web", {"v": 1})
        persistence.save_object_state("db", {"v": 2})
        assert persistence.delete_object_state("web") is True
        assert persistence.get_object_state("web") == {}
        assert persistence.delete_object_state("web") is False
        assert persistence.delete_object_state("never-saved") is False
        assert persistence.retrieve_all_state_from_persistence() == {"db": {"v": 2}}

    def test_a_fresh_instance_on_the_same_store_sees_what_was_persisted(
        self, persistence: StatePersistence, store: Path
    ) -> None:
        persistence.save_object_state("web", ROUND_TRIP)
        persistence.save_object_state("gone", {"v": 0})
        persistence.delete_object_state("gone")
        persistence.save_run({"id": "20260101T000000.000-aaaaaa", "status": "running"})
        persistence.persist_all_state()
        fresh = self.make_persistence(store)
        assert same(fresh.get_object_state("web"), ROUND_TRIP)
        assert fresh.get_object_state("gone") == {}
        assert [run["id"] for run in fresh.list_runs()] == ["20260101T000000.000-aaaaaa"]

    # -- run history ---------------------------------------------------------------------

    def test_runs_are_listed_newest_first_without_their_tasks(
        self, persistence: StatePersistence
    ) -> None:
        ids = [f"20260101T00000{i}.000-abcdef" for i in range(3)]
        for run_id in (ids[1], ids[0], ids[2]):
            task = {"name": "web", "status": "succeeded", "attempt_log": []}
            persistence.save_run({"id": run_id, "status": "succeeded", "tasks": [task]})
        runs = persistence.list_runs()
        assert [run["id"] for run in runs] == ids[::-1]
        assert all("tasks" not in run and run["status"] == "succeeded" for run in runs)
        assert [run["id"] for run in persistence.list_runs(limit=2)] == [ids[2], ids[1]]
        assert persistence.list_runs(limit=0) == []

    def test_a_run_saved_again_replaces_the_one_with_its_id(
        self, persistence: StatePersistence
    ) -> None:
        run_id = "20260101T000000.000-abcdef"
        persistence.save_run({"id": run_id, "status": "running", "tasks": []})
        task = {"name": "web", "status": "failed", "error": "boom ☃", "duration": 0.25}
        persistence.save_run({"id": run_id, "status": "failed", "tasks": [task], "pid": 42})
        assert persistence.load_run(run_id) == {
            "id": run_id,
            "status": "failed",
            "tasks": [task],
            "pid": 42,
        }
        assert [run["status"] for run in persistence.list_runs()] == ["failed"]

    def test_what_an_attempt_printed_reads_back_as_it_went_in(
        self, persistence: StatePersistence
    ) -> None:
        run_id = "20260101T000000.000-abcdef"
        output = {
            "stdout": "line one\n\x1b[31mred\x1b[0m ☃ \x00 tab\t\n",
            "stderr": "a lone surrogate \udc80, and a partial line without end",
            "log": "10:00:00 WARNING app: careful\n" * 100,
        }
        attempt = {"attempt": 1, "status": "failed", "error": "boom", "output": output}
        task = {"name": "web", "status": "failed", "attempt_log": [attempt]}
        persistence.save_run({"id": run_id, "status": "failed", "tasks": [task]})
        loaded = persistence.load_run(run_id)
        assert loaded is not None
        assert loaded["tasks"][0]["attempt_log"][0]["output"] == output

    def test_a_run_never_saved_loads_as_none(self, persistence: StatePersistence) -> None:
        assert persistence.load_run("20260101T000000.000-abcdef") is None
        assert persistence.list_runs() == []

    def test_prune_keeps_the_newest_runs_and_says_how_many_went(
        self, persistence: StatePersistence
    ) -> None:
        ids = [f"20260101T00000{i}.000-abcdef" for i in range(4)]
        for run_id in ids:
            persistence.save_run({"id": run_id, "status": "succeeded", "tasks": []})
        persistence.save_object_state("web", {"kept": True})
        assert persistence.prune_runs(keep=2) == 2
        assert [run["id"] for run in persistence.list_runs()] == [ids[3], ids[2]]
        assert persistence.load_run(ids[0]) is None
        assert persistence.prune_runs(keep=5) == 0
        assert persistence.prune_runs(keep=0) == 2
        assert persistence.list_runs() == []
        assert persistence.get_object_state("web") == {"kept": True}  # state is not a run
        with pytest.raises(OpusError):
            persistence.prune_runs(keep=-1)

    # -- the engine: records, resume, history ------------------------------------------------

    def test_an_engine_run_is_recorded_and_resume_restores_what_succeeded(
        self, persistence: StatePersistence, store: Path
    ) -> None:
        def engine(using: StatePersistence, fail: bool) -> Tasks:
            tasks = Tasks(logger=LoggerWrapper("CRITICAL"), state_persistence=using)
            tasks.register_task_processor(ContractPublish())
            tasks.add_task(
                Task("ContractPublish", "v1", {"value": {"n": (1, 2)}}, {"name": "first"})
            )
            tasks.add_task(
                Task(
                    "ContractPublish",
                    "v1",
                    {"value": "second ran", "fail": fail},
                    {"name": "second", "dependencies": ["first"]},
                )
            )
            return tasks

        report = engine(persistence, fail=True).process_context("apply", "default")
        assert report["first"].status == TaskStatus.SUCCEEDED
        assert report["second"].status == TaskStatus.FAILED
        run = persistence.load_run(report.run_id or "")
        assert run is not None and run["status"] == "failed"
        assert [(t["name"], t["status"]) for t in run["tasks"]] == [
            ("first", "succeeded"),
            ("second", "failed"),
        ]
        records = persistence.retrieve_all_state_from_persistence()
        assert records[f"{RUN_RECORDS}apply:default:first"]["status"] == "succeeded"

        persistence.persist_all_state()
        again = engine(self.make_persistence(store), fail=False)
        resumed = again.process_context("apply", "default", resume=True)
        assert resumed["first"].status == TaskStatus.RESTORED
        assert resumed["second"].status == TaskStatus.SUCCEEDED
        assert again.key_value_store.store["first"] == {"n": (1, 2)}  # restored as published

    # -- copies and processes ------------------------------------------------------------

    def test_a_pickled_copy_works_on_the_same_store(
        self, persistence: StatePersistence, store: Path
    ) -> None:
        persistence.save_object_state("before", {"v": 1})
        persistence.get_object_state("before")  # whatever it opens is open now
        copy = pickle.loads(pickle.dumps(persistence))
        assert type(copy) is type(persistence)
        assert copy.get_object_state("before") == {"v": 1}
        copy.save_object_state("from the copy", {"v": 2})
        assert copy.get_object_state("from the copy") == {"v": 2}
        if self.make_persistence(store) is not persistence:  # a store outside the object
            assert self.make_persistence(store).get_object_state("from the copy") == {"v": 2}
            assert persistence.get_object_state("from the copy") == {"v": 2}
        persistence.save_object_state("after", {"v": 3})  # the original goes on working
        assert persistence.get_object_state("after") == {"v": 3}

    def test_processes_writing_at_once_lose_nothing(
        self, persistence: StatePersistence, store: Path
    ) -> None:
        """Two real processes, each with a pickled copy, save at the same moment. Where the
        persistence claims `supports_concurrent_processes`, they write one store and every
        save is there afterwards; otherwise each copy keeps every save of its own."""
        persistence.save_object_state("seed", {"v": 0})
        payload = pickle.dumps(persistence)
        context: Any = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        barrier = context.Barrier(2)
        count = 60
        reports = {who: store.parent / f"{who}-writer.report" for who in ("left", "right")}
        workers = [
            context.Process(
                target=_write_at_once, args=(payload, who, count, barrier, str(reports[who]))
            )
            for who in ("left", "right")
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        said = {
            who: path.read_text(encoding="utf-8") for who, path in reports.items() if path.exists()
        }
        assert [worker.exitcode for worker in workers] == [0, 0], said
        if not type(persistence).supports_concurrent_processes:
            return
        seen = self.make_persistence(store)
        state = seen.retrieve_all_state_from_persistence()
        for who in ("left", "right"):
            assert [state.get(f"{who}-{i}") for i in range(count)] == [
                {"who": who, "i": i} for i in range(count)
            ]
        assert state["shared"]["i"] == count - 1 and state["seed"] == {"v": 0}
        assert {run["id"] for run in seen.list_runs()} == {"run-left", "run-right"}
