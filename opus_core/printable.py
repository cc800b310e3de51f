"""`printable`: text from tasks made safe to write to a terminal (and `is_unicode`: whether
text can be written at all).

Task names and errors reach the terminal through log lines (the built-in plugin's
`LogLines`) and every table of the command line (`opus_core.cli.output`); both
show them through `printable`, which sits below either.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 controls, DEL, C1 controls
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # marks and overrides of text direction
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff]"  # lone surrogates (bytes decoded with surrogateescape)
)
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    code = ord(character)
    return _ESCAPES.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` safe to write to a terminal, on one line: each control character (C0, DEL,
    C1), line separator, text-direction override and lone surrogate is written as its
    Python escape — `\\x1b`, `\\r`, `\\n`, `\\x7f`, `\\u202e`, `\\udce9` — so that no
    task name or error can move the cursor, clear the screen, hide text or fail to encode.
    Other text, whatever its script, is returned unchanged."""
    if text.isprintable():
        return text
    return _UNPRINTABLE.sub(_escape, text)


def is_unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: no lone surrogate (bytes decoded with
    `surrogateescape`), so UTF-8 — a file, a database, a log — holds it as it is."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
