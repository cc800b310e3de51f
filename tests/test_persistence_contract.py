"""The core's persistences pass the persistence contract (`opus_core.testing.PersistenceContract`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from opus_core import StatePersistance, StatePersistence, Tasks
from opus_core.persistence import MemoryPersistence, state_folder
from opus_core.persistence.sqlite import SqlitePersistence
from opus_core.testing import PersistenceContract


class TestMemoryPersistence(PersistenceContract):
    """`memory`: its store is the object, so the same path gives the same instance."""

    def setup_method(self) -> None:
        self.made: dict[Path, MemoryPersistence] = {}

    def make_persistence(self, path: Path) -> MemoryPersistence:
        return self.made.setdefault(path, MemoryPersistence())


class TestSqlitePersistence(PersistenceContract):
    def make_persistence(self, path: Path) -> SqlitePersistence:
        return SqlitePersistence(path / "state.db")


def test_state_persistence_made_directly_keeps_state_in_memory() -> None:
    persistence = StatePersistence()  # type: ignore[abstract]  # typed code: MemoryPersistence()
    assert isinstance(persistence, MemoryPersistence) and persistence.name == "memory"
    persistence.save_object_state("web", {"v": 1})
    assert persistence.state == {"web": {"v": 1}}
    assert isinstance(StatePersistance(), MemoryPersistence)  # type: ignore[abstract]
    assert isinstance(Tasks().state_persistence, MemoryPersistence)


def test_a_persistence_missing_a_state_method_cannot_be_made() -> None:
    class Forgetful(StatePersistence):
        name = "forgetful"

        def get_object_state(self, object_identifier: str) -> dict[str, object]:
            return {}

    with pytest.raises(TypeError, match="delete_object_state"):
        Forgetful()  # type: ignore[abstract]


def test_a_persistence_implementing_only_the_state_methods_keeps_runs_too(
    tmp_path: Path,
) -> None:
    class Dict(StatePersistence):
        name = "dict"

        def __init__(self) -> None:
            self.saved: dict[str, dict[str, object]] = {}

        def get_object_state(self, object_identifier: str) -> dict[str, object]:
            state: dict[str, object] = pickle.loads(
                pickle.dumps(self.saved.get(object_identifier, {}))
            )
            return state

        def save_object_state(self, object_identifier: str, data: dict[str, object]) -> None:
            self.saved[object_identifier] = pickle.loads(pickle.dumps(data))

        def delete_object_state(self, object_identifier: str) -> bool:
            return self.saved.pop(object_identifier, None) is not None

        def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, object]]:
            return {key: self.get_object_state(key) for key in self.saved}

    persistence = Dict()
    persistence.save_run({"id": "b", "status": "running"})
    persistence.save_run({"id": "a", "status": "succeeded", "tasks": []})
    assert [run["id"] for run in persistence.list_runs()] == ["b", "a"]
    assert persistence.prune_runs(keep=1) == 1 and persistence.load_run("a") is None


def test_the_state_folder_is_the_projects_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    one, two = tmp_path / "one", tmp_path / "two"
    for project in (one, two):
        project.mkdir()
        (project / "opus.toml").write_text("")
    assert state_folder(one) == state_folder(one / "opus.toml")
    assert state_folder(one) != state_folder(two)
    assert state_folder(one).parent == tmp_path / "xdg" / "opus"
    assert state_folder(one).name.startswith("one-")
    Tasks.from_config(two / "opus.toml")  # the project loaded last is the current one
    assert state_folder() == state_folder(two)
    assert SqlitePersistence().path == state_folder(two) / "state.db"
