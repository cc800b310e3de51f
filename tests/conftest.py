"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Harness


@pytest.fixture(autouse=True)
def own_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default persistence (sqlite) writes under the user's state folder: the test's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / ".xdg-state"))


@pytest.fixture
def make_harness(tmp_path: Path) -> Callable[..., Harness]:
    def make(runner: str = "sequential", **options: Any) -> Harness:
        return Harness(tmp_path, runner, **options)

    return make
