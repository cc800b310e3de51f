"""The `colorlog` logger: levels in colour, task names highlighted, retries, failures and the
run summary set apart — on a terminal only. `NO_COLOR` or output that is not a terminal
gives the same lines as plain text."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, TextIO

if TYPE_CHECKING:
    import logging  # imported when a logger is made, not when opus lists plugins

from opus_core import LoggerWrapper, hookimpl

__version__ = "0.1.0"

DEFAULT_FORMAT = "%(log_color)s%(levelname)-8s%(reset)s %(message)s"
LEVEL_COLORS = {
    "DEBUG": "thin_white",
    "INFO": "green",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold_red,bg_white",
}
_TASK_NAME = re.compile(r"(task )('[^']*')")
_EMPHASIS = (
    # (what the message starts with or contains, colour)
    ("run finished", "bold"),
    ("retrying in", "bold_yellow"),
    ("failed", "bold_red"),
    ("timed_out", "bold_red"),
)


def colour_wanted(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when `NO_COLOR` is set to anything."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _StreamProxy:
    """Whatever `sys.stdout` is when a record is written — `sys.stderr` when
    `LoggerWrapper.stream` says so (as under the `opus` command)."""

    def write(self, text: str) -> int:
        return _stream().write(text)

    def flush(self) -> None:
        _stream().flush()


def _stream() -> TextIO:
    return sys.stderr if ColorLogger.stream == "stderr" else sys.stdout


def make_formatter(fmt: str, colour: bool) -> logging.Formatter:
    """A colorlog formatter that also highlights task names and sets apart retries,
    failures and summaries. (colorlog is imported here, when a logger is made, so
    that listing plugins does not pay for it.)"""
    import colorlog
    from colorlog.escape_codes import parse_colors

    reset = parse_colors("reset")

    class HighlightingFormatter(colorlog.ColoredFormatter):
        def format(self, record: logging.LogRecord) -> str:
            text = super().format(record)
            if not colour:
                return text
            message = record.getMessage()
            highlighted = _TASK_NAME.sub(
                lambda m: f"{m.group(1)}{parse_colors('bold_cyan')}{m.group(2)}{reset}", message
            )
            for marker, emphasis in _EMPHASIS:
                if marker in message:
                    highlighted = f"{parse_colors(emphasis)}{highlighted}{reset}"
                    break
            return text.replace(message, highlighted, 1)

    return HighlightingFormatter(fmt, log_colors=LEVEL_COLORS, no_color=not colour)


def checked_formatter(fmt: str, colour: bool) -> logging.Formatter:
    """`make_formatter(fmt, colour)`, after formatting one sample record with it.

    Raises ValueError for a format that cannot format a line — an unknown field
    (`%(task)s`), a bad conversion (`%(message)d`), a stray `%` — so that a bad
    format is a configuration error when the logger is made, not a "--- Logging
    error ---" traceback on every line of the run.
    """
    if not isinstance(fmt, str):
        raise ValueError(f"format must be a string, got {type(fmt).__name__}")
    import logging

    record = logging.LogRecord("opus", logging.INFO, __file__, 1, "a message", None, None)
    try:
        formatter = make_formatter(fmt, colour)
        formatter.format(record)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(
            f"format {fmt!r} cannot format a log line ({exc}); it may use LogRecord "
            "attributes (levelname, message, asctime, name, ...), %(log_color)s, "
            "%(reset)s and colour names"
        ) from None
    return formatter


class ColorLogger(LoggerWrapper):
    """Logs through `colorlog` to standard output (`"colorlog"`), or standard error under the
    `opus` command (`LoggerWrapper.stream`).

    Options: `level` (DEBUG, INFO, WARNING, ERROR or CRITICAL; default: `[opus]
    log_level`, else INFO) and `format` (a `colorlog` format string; `%(log_color)s`
    and `%(reset)s` place the level colour).
    """

    name: ClassVar[str] = "colorlog"

    def __init__(self, level: str = "INFO", format: str = DEFAULT_FORMAT) -> None:
        import logging

        super().__init__(level)
        self.colour = colour_wanted(_stream())
        formatter = checked_formatter(format, self.colour)
        self.format = format
        self.logger = logging.getLogger("opus.colorlog")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)  # each wrapper filters by its own level
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
        handler = logging.StreamHandler(_StreamProxy())  # type: ignore[arg-type]
        handler.setFormatter(formatter)
        self.logger.addHandler(handler)


@hookimpl
def opus_register_loggers() -> Iterable[type[LoggerWrapper]]:
    """The `colorlog` logger."""
    return [ColorLogger]
