"""`python -m opus_core.plugin.docs [--check]`: write `docs/hooks.md` from the hookspecs.

Everything in `docs/hooks.md` comes from `opus_core/plugin/spec.py`: the module
docstring is the introduction, the banner comments (`# -- tasks: what runs ---`)
are the sections, and each hook shows the source text of its `def` line(s), whether
it is `firstresult`, and its docstring, with `::` blocks as fenced Python. Edit
spec.py, then run this module; `--check` (run by the tests) exits 1 if the file
is stale.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import sys
import textwrap
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from opus_core.plugin import PROJECT
from opus_core.plugin import spec as spec_module

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
"""Where the hook reference goes: `docs/hooks.md` of the source tree."""

REGENERATE = "python -m opus_core.plugin.docs"

_BANNER = re.compile(r"#\s*--\s*(?P<title>.*?)\s*-*\s*$")


@dataclass(frozen=True, slots=True)
class Hook:
    """One hookspec as the reference shows it."""

    name: str
    section: str
    """The banner comment it sits under, e.g. `tasks: what runs`."""
    signature: str
    """The source text of its `def` line(s), dedented, without the trailing colon."""
    firstresult: bool
    doc: str
    """Its docstring, as `inspect.getdoc` cleans it."""
    function: Callable[..., Any]


def _banners(source: str) -> list[tuple[int, str]]:
    """(line, title) of every `# -- title ---` comment, in order."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            match = _BANNER.fullmatch(token.string)
            if match:
                found.append((token.start[0], match["title"]))
    return found


def hooks(module: ModuleType = spec_module) -> list[Hook]:
    """Every hookspec of `module`, in source order, with the banner it sits under."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    banners = _banners(source)
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        function = getattr(module, node.name)
        options = getattr(function, f"{PROJECT}_spec", None)
        if options is None:
            continue
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        above = [title for line, title in banners if line < start]
        # The header is everything from `def` to the line before the body's first statement.
        end = max(node.lineno, node.body[0].lineno - 1)
        header = textwrap.dedent("\n".join(lines[node.lineno - 1 : end])).rstrip()
        found.append(
            Hook(
                name=node.name,
                section=above[-1] if above else "",
                signature=header.removesuffix(":"),
                firstresult=bool(options.get("firstresult")),
                doc=inspect.getdoc(function) or "",
                function=function,
            )
        )
    return found


def markdown(doc: str) -> str:
    """A docstring as Markdown: a paragraph ending in `::` introduces a fenced Python block."""
    lines = doc.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.rstrip().endswith("::"):
            out.append(line)
            continue
        text = line.rstrip()[:-2]
        # reST: "Example::" reads "Example:"; "text ::" and a lone "::" just drop the marker.
        text = text.rstrip() if text.endswith(" ") or not text.strip() else text + ":"
        if text.strip():
            out.append(text)
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        out += ["", "```python", textwrap.dedent("\n".join(block)), "```"]
        if i < len(lines):
            out.append("")
    return "\n".join(out).strip()


def _heading(section: str) -> str:
    return section[:1].upper() + section[1:] if section else "Other hooks"


def _cell(doc: str) -> str:
    """The first line of a docstring, fit for a table cell."""
    return doc.splitlines()[0].replace("|", "\\|") if doc else ""


def _anchor(name: str) -> str:
    return name.lower()


def render(module: ModuleType = spec_module) -> str:
    """The whole of `docs/hooks.md`."""
    found = hooks(module)
    parts = [
        "# opus hooks",
        f"<!-- Generated from opus_core/plugin/spec.py by `{REGENERATE}`; do not edit. -->",
        markdown(inspect.getdoc(module) or ""),
        "| hook | section | firstresult | what it is for |\n|---|---|---|---|\n"
        + "\n".join(
            f"| [`{hook.name}`](#{_anchor(hook.name)}) | {hook.section.partition(':')[0]} "
            f"| {'yes' if hook.firstresult else 'no'} | {_cell(hook.doc)} |"
            for hook in found
        ),
    ]
    section: str | None = None
    for hook in found:
        if hook.section != section:
            section = hook.section
            parts.append(f"## {_heading(section)}")
        parts.append(f"### {hook.name}")
        parts.append(f"```python\n{hook.signature}: ...\n```")
        parts.append(
            "**firstresult**: the first implementation to return something other than None"
            " wins; the rest are not called."
            if hook.firstresult
            else "Every implementation is called."
        )
        parts.append(markdown(hook.doc) or "*Not documented.*")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `docs/hooks.md`, or with `--check` exit 1 if it is not what would be written."""
    from opus_core.files import generated_file_main

    return generated_file_main(
        argv,
        module="opus_core.plugin.docs",
        default=DOCS,
        source="opus_core/plugin/spec.py",
        render=render,
    )


if __name__ == "__main__":
    sys.exit(main())
