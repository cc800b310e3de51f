"""Every Python snippet in the README and in the pages of docs/ runs as written.

A block that starts with `>>> ` runs as a doctest. A block that is a fragment (a file of a plugin that is not installed, a part of a
class shown by itself) is fenced as `python` with the HTML comment
`<!-- fragment: WHY -->` on the line above it: it is shown, not run, and says why.
The generated pages (hooks.md, cli.md) are left out: their code is checked where it is
generated from.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GENERATED = {"hooks.md", "cli.md"}
PAGES = [README, *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in GENERATED)]
BLOCK = re.compile(r"(<!-- fragment: [^>]*-->\n)?```python\n(.*?)```", re.S)


def snippets() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for fragment, code in BLOCK.findall(page.read_text(encoding="utf-8")):
            if not fragment:
                found.append((page, code))
    return found


SNIPPETS = snippets()


def test_the_readme_and_the_docs_have_snippets() -> None:
    assert sum(page == README for page, _ in SNIPPETS) >= 1
    assert len(SNIPPETS) >= 15


@pytest.mark.parametrize(
    ("page", "snippet"),
    SNIPPETS,
    ids=[f"{page.name}:{s.splitlines()[0][:40]}" for page, s in SNIPPETS],
)
def test_snippet_runs(page: Path, snippet: str, tmp_path: Path, capsys, monkeypatch) -> None:
    from opus_core.testing import reset_caches

    monkeypatch.chdir(tmp_path)
    reset_caches()  # each snippet as a script of its own, in a process of its own
    if snippet.startswith(">>> "):  # a session at the interpreter's prompt
        test = doctest.DocTestParser().get_doctest(snippet, {}, page.name, str(page), 0)
        assert doctest.DocTestRunner().run(test).failed == 0
        return
    namespace: dict = {"__name__": "__main__"}  # as a script: its main guard runs
    exec("from opus_core import *\n", namespace)  # snippets that show a fragment lean on this
    exec(compile(snippet, str(page), "exec"), namespace)
    out = capsys.readouterr().out
    if re.search(r"^print\(", snippet, re.M) or "__main__" in snippet:
        assert out.strip(), "the snippet prints nothing"
    if "hello.txt" in snippet:
        assert (tmp_path / "hello.txt").read_text() == "Hello World!"
    if "sleepy" in snippet:
        assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
