"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Harness


@pytest.fixture
def make_harness(tmp_path: Path) -> Callable[..., Harness]:
    def make(runner: str = "sequential", **options: Any) -> Harness:
        return Harness(tmp_path, runner, **options)

    return make
