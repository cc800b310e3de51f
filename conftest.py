"""What every test of the repository (tests/ and plugins/*/tests/) runs under."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# `opus` fits its tables to `$COLUMNS` when it is set (on a pipe, a table is as wide as
# what it holds). A `COLUMNS` exported by the developer's shell, or the 80 that
# pytest-xdist's workers are given, would wrap the tables the tests read: each test that
# is about the width sets it.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def _same_working_directory() -> Iterator[None]:
    """A test that changes the working directory without putting it back (use
    `monkeypatch.chdir`) fails: the tests after it would run somewhere else (and the Ray
    runner's workers, given the driver's working directory, would not find the tests)."""
    before = os.getcwd()
    yield
    after = os.getcwd()
    if after != before:
        os.chdir(before)
        pytest.fail(f"the test left the working directory at {after} (it was {before})")
