"""What every test of the repository (tests/ and plugins/*/tests/) runs under."""

from __future__ import annotations

import os

# `opus` fits its tables to `$COLUMNS` when it is set (on a pipe, a table is as wide as
# what it holds). A `COLUMNS` exported by the developer's shell, or the 80 that
# pytest-xdist's workers are given, would wrap the tables the tests read: each test that
# is about the width sets it.
os.environ.pop("COLUMNS", None)
