"""Every Python snippet in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.splitlines()[0][:40] for s in SNIPPETS])
def test_readme_snippet_runs(snippet: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}  # as a script: its main guard runs
    exec("from opus_core import *\n", namespace)  # snippets that show a fragment lean on this
    exec(compile(snippet, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    if "print(" in snippet:
        assert out.strip(), "the snippet prints nothing"
    if "hello.txt" in snippet:
        assert (tmp_path / "hello.txt").read_text() == "Hello World!"
    if "sleepy" in snippet:
        assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
