"""Which modules are the user's own (what a runner sending work to other machines sends)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pluggy
import pytest

from opus_core.runners.user_modules import is_library_file, source_file, user_top_levels


def test_a_module_of_the_project_is_the_user_s_and_libraries_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop_steps.py").write_text("def step():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("shop_steps")
    try:
        found = dict(user_top_levels())
        assert found["shop_steps"] is module
        assert source_file(module) == str(tmp_path / "shop_steps.py")
        assert not is_library_file(str(tmp_path / "shop_steps.py"))
        assert "json" not in found and "pluggy" not in found and "opus_core" not in found
        assert "__main__" not in found
        assert is_library_file(json.__file__) and is_library_file(pluggy.__file__)
        assert source_file(sys) is None  # built in
    finally:
        del sys.modules["shop_steps"]
