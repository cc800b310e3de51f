"""Every pyproject.toml states its license as an SPDX expression (PEP 639), the form
setuptools keeps accepting, with a setuptools that reads it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from string import Template
from typing import Any

import pytest

from opus_core.cli.plugin_templates import PYPROJECT

ROOT = Path(__file__).resolve().parent.parent
PYPROJECTS = sorted(
    [
        ROOT / "pyproject.toml",
        *ROOT.glob("plugins/*/pyproject.toml"),
        *ROOT.glob("examples/*/pyproject.toml"),
    ]
)


def the_scaffolds_pyproject() -> dict[str, Any]:
    names = {"name": "x", "module": "opus_plugin_x", "distribution": "opus-plugin-x"}
    return tomllib.loads(Template(PYPROJECT).substitute(names, summary="an example"))


def test_every_plugin_and_example_is_covered() -> None:
    assert len(PYPROJECTS) >= 7
    assert ROOT / "plugins" / "opus-plugin-dask" / "pyproject.toml" in PYPROJECTS


@pytest.mark.parametrize(
    "pyproject",
    [*PYPROJECTS, "opus plugins new"],
    ids=[*(str(p.relative_to(ROOT)) for p in PYPROJECTS), "opus plugins new"],
)
def test_the_license_is_an_spdx_string(pyproject: Path | str) -> None:
    data = (
        tomllib.loads(pyproject.read_text())
        if isinstance(pyproject, Path)
        else the_scaffolds_pyproject()
    )
    assert data["project"]["license"] == "MIT"
    assert not any("License ::" in c for c in data["project"].get("classifiers", []))
    assert "setuptools>=77" in data["build-system"]["requires"]
