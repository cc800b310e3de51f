"""`LoggerWrapper`: the logger the engine and processors write to."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from opus_core.capture import current as current_output
from opus_core.capture import unkept
from opus_core.config import LEVELS

if TYPE_CHECKING:
    import logging

# `logging`'s levels, by name: the module itself is imported with the first logger made
# (a plugin subclassing LoggerWrapper does not pay for it at `opus --help`).
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVELS = dict(zip(LEVELS, (DEBUG, INFO, WARNING, ERROR, CRITICAL), strict=True))
_handler_class: Any = None


def _stdout_handler() -> logging.Handler:
    """A handler writing to whatever `sys.stdout` (or `sys.stderr`, as
    `LoggerWrapper.stream` says) is at the time of the record, so redirection works."""
    global _handler_class
    if _handler_class is None:
        import logging

        class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
            opus_plain = True

            @property
            def stream(self) -> TextIO:
                return output_stream(LoggerWrapper.stream)

            @stream.setter
            def stream(self, _value: TextIO) -> None:
                pass

            def emit(self, record: logging.LogRecord) -> None:
                # StreamHandler.emit, looking the stream up once: `handle` holds the lock.
                try:
                    stream = output_stream(LoggerWrapper.stream)
                    stream.write(self.format(record) + self.terminator)
                    stream.flush()
                except RecursionError:
                    raise
                except Exception:
                    self.handleError(record)

        _handler_class = StdoutHandler
    handler: logging.Handler = _handler_class()
    return handler


def output_stream(name: str) -> TextIO:
    """`sys.stderr` for "stderr", else `sys.stdout` — as they are now."""
    return sys.stderr if name == "stderr" else sys.stdout


def parse_level(level: str | int) -> int:
    """A `logging` level from a name such as "INFO" (any case) or a number."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.upper() in LEVELS:
        return _LEVELS[level.upper()]
    raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")


def logs_at(logger: object, level: int) -> bool:
    """Whether `logger` (any logger plugin) writes messages at `level` now: its
    `is_enabled_for`, or True for a logger without one."""
    enabled = getattr(logger, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(level))


_formatter_class: Any = None


def _plain_formatter() -> logging.Formatter:
    """`%(asctime)s %(levelname)-7s %(message)s` with the time as `%H:%M:%S`: the clock is
    formatted once a second, not once a line."""
    global _formatter_class
    if _formatter_class is None:
        import logging

        class PlainFormatter(logging.Formatter):
            _second = -1
            _clock = ""

            def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
                if datefmt != self.datefmt:
                    return super().formatTime(record, datefmt)
                return self.clock(record.created)

            def clock(self, created: float) -> str:
                """`created` as `%H:%M:%S` in local time, formatted again only when the
                second changes."""
                second = int(created)
                if second != self._second:
                    self._clock = time.strftime("%H:%M:%S", self.converter(created))
                    self._second = second
                return self._clock

            def format(self, record: logging.LogRecord) -> str:
                if record.exc_info or record.exc_text or record.stack_info:
                    return super().format(record)
                record.message = record.getMessage()
                record.asctime = self.formatTime(record, self.datefmt)
                return f"{record.asctime} {record.levelname:<7} {record.message}"

        _formatter_class = PlainFormatter
    formatter: logging.Formatter = _formatter_class(
        "%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"
    )
    return formatter


def _plain_logger() -> logging.Logger:
    import logging

    logger = logging.getLogger("opus")
    if not any(getattr(h, "opus_plain", False) for h in logger.handlers):
        handler = _stdout_handler()
        handler.setFormatter(_plain_formatter())
        logger.addHandler(handler)
        logger.setLevel(DEBUG)  # each LoggerWrapper filters by its own level
        logger.propagate = False
    return logger


class LoggerWrapper:
    """The default logger: plain lines on standard output through the stdlib logger `"opus"`
    (standard error under the `opus` command: see `stream`).

    Subclass it (and give the subclass a `name`) to log elsewhere, overriding `log`;
    every method takes the message (`message=` in the seed's style too), and
    `logging`-style arguments to format into it with `%`.
    """

    name: ClassVar[str] = "plain"
    stream: ClassVar[str] = "stdout"
    """Where log lines go: "stdout" (the default, as the seed's) or "stderr".

    Looked up as each line is written. The `opus` command sets it to "stderr"
    (`LoggerWrapper.stream = "stderr"`) so that standard output carries only
    results; a subclass writing elsewhere may honour it too.
    """

    def __init__(self, level: str | int = "INFO") -> None:
        self.level = parse_level(level)
        self.logger = _plain_logger()

    def is_enabled_for(self, level: int) -> bool:
        """Whether a message at `level` (a `logging` level) would be written."""
        return level >= self.level

    def log(self, level: int, message: str) -> None:
        """Log `message` at `level` (a `logging` level), if this wrapper's level lets it through."""
        if level >= self.level:
            logger = self.logger
            if logger.isEnabledFor(level):
                # What `logger.log` does, through logging's public `makeRecord` and
                # `handle`, without looking for the caller's frame: it is always this method.
                logger.handle(
                    logger.makeRecord(logger.name, level, __file__, _LINE, message, (), None, "log")
                )

    def _write(self, level: int, message: str) -> None:
        """`log`, and, in a task's attempt, a copy kept as its log line (not as what the
        logger writes to stdout, which would keep it twice)."""
        output = current_output()
        if output is None:
            self.log(level, message)
            return
        if self.is_enabled_for(level):
            output.log(level, message)
        with unkept():
            self.log(level, message)

    def debug(self, message: str, *args: object) -> None:
        """Log at DEBUG; `args` are formatted into `message` with `%`."""
        self._write(DEBUG, message % args if args and DEBUG >= self.level else message)

    def info(self, message: str, *args: object) -> None:
        """Log at INFO; `args` are formatted into `message` with `%`."""
        self._write(INFO, message % args if args and INFO >= self.level else message)

    def warning(self, message: str, *args: object) -> None:
        """Log at WARNING; `args` are formatted into `message` with `%`."""
        self._write(WARNING, message % args if args and WARNING >= self.level else message)

    def warn(self, message: str, *args: object) -> None:
        """Log at WARNING (the seed's spelling)."""
        self.warning(message, *args)

    def error(self, message: str, *args: object) -> None:
        """Log at ERROR; `args` are formatted into `message` with `%`."""
        self._write(ERROR, message % args if args and ERROR >= self.level else message)

    def critical(self, message: str, *args: object) -> None:
        """Log at CRITICAL; `args` are formatted into `message` with `%`."""
        self._write(CRITICAL, message % args if args and CRITICAL >= self.level else message)


_LINE = LoggerWrapper.log.__code__.co_firstlineno
"""Where the records of `LoggerWrapper.log` say they come from."""
