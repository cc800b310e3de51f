"""mkdocs hook: links from a docs page to a file of the repository outside `docs/`.

A page links to `../examples/etl.py` so that the link works where the Markdown is read
as it is (GitHub, an editor). The site cannot serve that file, so this hook checks that
the file exists — a missing one is a warning, which `mkdocs build --strict` makes an
error — and then links to it in the repository (`repo_url` in mkdocs.yml) or, without
one, leaves the link's text alone.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.repository_links")

LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)


def outside_link(match: re.Match[str], page: str, docs: Path, repo_url: str | None) -> str:
    text, target = match.groups()
    page_dir = (docs / page).parent
    if re.match(r"[a-z][a-z0-9+.-]*:|#|/", target):
        return match.group(0)
    path, _, fragment = target.partition("#")
    resolved = (page_dir / path).resolve()
    if resolved == docs or docs in resolved.parents:
        return match.group(0)  # a page of the site: mkdocs checks it
    root = docs.parent
    if root not in resolved.parents or not resolved.exists():
        log.warning(f"Doc file {page!r} links to {target!r}: no such file in the repository")
        return match.group(0)
    if not repo_url:
        return text
    kind = "tree" if resolved.is_dir() else "blob"
    url = f"{repo_url.rstrip('/')}/{kind}/HEAD/{resolved.relative_to(root).as_posix()}"
    return f"[{text}]({url}{'#' + fragment if fragment else ''})"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    pieces, start = [], 0
    for fence in FENCE.finditer(markdown):
        pieces.append(markdown[start : fence.start()])
        pieces.append(fence.group(0))
        start = fence.end()
    pieces.append(markdown[start:])
    repo_url, src = config.get("repo_url"), page.file.src_path
    for i in range(0, len(pieces), 2):  # the text between fenced blocks
        pieces[i] = LINK.sub(lambda m: outside_link(m, src, docs, repo_url), pieces[i])
    return "".join(pieces)
