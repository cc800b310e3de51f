"""The `opus` command line.

Every command, the core's own included, is added by a plugin through
`opus_register_commands`: the core's are the plugin `builtin.commands`
(`opus_core.cli.commands`), which the command line's plugin manager registers
(`command_line_plugins`). Each of their modules declares a command's arguments
beside its handler, and imports what the command needs only when it runs, so
`opus --help` costs little more than finding the plugins. Each command's
handler gets a `CommandContext` (or, if it does not ask for one, the parsed
arguments), and the plugins are configured once, here, before it runs. Stopping
(Ctrl-C, SIGTERM) is `opus_core.cli.signals`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opus_core.cli.context import CommandContext, command_line_plugins, takes_context
from opus_core.cli.parser import USAGE_ERROR, Commands, DefaultAction, Parser
from opus_core.cli.parser import build_parser as parser_of
from opus_core.cli.signals import (
    INTERRUPTED,
    STOP_GRACE,
    STOP_GRACE_ENV,
    TERMINATED,
    env_seconds,
    exit_leaving_threads,
    interrupted_status,
    stop_grace,
    stop_signals,
)
from opus_core.version import __version__

if TYPE_CHECKING:
    from opus_core.plugin.manager import PluginManager


Handler = Callable[[CommandContext], int] | Callable[[argparse.Namespace], int]
"""A command's handler: a function of a `CommandContext` (its first parameter annotated so)
or of the parsed arguments, returning the exit status."""

__all__ = [
    "CommandContext",
    "Commands",
    "Handler",
    "build_parser",
    "main",
]
# Stopping, at home in opus_core.cli.signals: importable from here, where it was.
__all__ += [
    "INTERRUPTED",
    "STOP_GRACE",
    "STOP_GRACE_ENV",
    "TERMINATED",
    "env_seconds",
    "exit_leaving_threads",
    "interrupted_status",
    "stop_grace",
]


def build_parser(manager: PluginManager | None = None) -> Parser:
    """The parser of `opus` with every plugin's commands (the core's are a plugin's too);
    `manager` defaults to a new `command_line_plugins()`."""
    return parser_of(manager or command_line_plugins())


def _early(argv: list[str]) -> argparse.Namespace:
    """The options that decide which plugins load, read before the full parse, and
    `command`: the first word that is not an option ("" for none), the command to parse
    whole."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", default=None)
    early.add_argument("--debug", action="store_true")
    early.add_argument("--trace-plugins", action="store_true")
    early.add_argument("-p", dest="plugins", action="append", default=[])
    known, rest = early.parse_known_args(argv)
    known.command = next((word for word in rest if not word.startswith("-")), "")
    return known


def _manager(config: str | None) -> PluginManager:
    """The plugin manager for the command line, honouring `[opus] disable_plugins`.

    A configuration that cannot be read is ignored here; the command that
    needs it reports it.
    """
    from opus_core.config import opus_value
    from opus_core.errors import OpusError

    try:
        disabled = opus_value(config, "disable_plugins", ())
    except OpusError:
        disabled = ()
    return command_line_plugins(disabled=disabled)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `opus` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:  # answered before any plugin loads
        print(f"opus {__version__}")
        return 0
    folder = os.getcwd()  # `opus run` works in the project folder; a caller gets its own back
    with stop_signals():
        try:
            return _main(argv)
        except KeyboardInterrupt as exc:  # Ctrl-C, wherever it lands: plugins, parsing, running
            from opus_core.plugin.trace import PluginImportInterrupted

            how = "terminated" if interrupted_status() == TERMINATED else "interrupted"
            where = f" {exc}" if isinstance(exc, PluginImportInterrupted) else ""
            sys.stderr.write(f"opus: {how}{where}\n")
            exit_leaving_threads(interrupted_status())
            return interrupted_status()
        finally:
            with contextlib.suppress(OSError):
                os.chdir(folder)


def _main(argv: list[str]) -> int:
    from opus_core.plugin.manager import DEBUG_ENV, PLUGINS_ENV, TRACE_ENV, plugin_modules

    early = _early(argv)
    debug = early.debug
    if debug:
        os.environ[DEBUG_ENV] = "1"
    if early.trace_plugins:
        os.environ[TRACE_ENV] = "1"
    if early.plugins:
        os.environ[PLUGINS_ENV] = plugin_modules(early.plugins)
    try:
        manager = _manager(early.config)
        parser = parser_of(manager, early.command)  # that command's arguments, the rest listed
    except Exception as exc:
        return _failed(exc, debug)
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "listed_only", False):  # a command only listed runs: build all, whole
        args = parser_of(manager).parse_args(argv)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # as parse_args says it
    args.plugin_manager = manager  # for handlers of the parsed arguments: context.plugins
    handler = getattr(args, "handler", None)
    if isinstance(handler, DefaultAction):  # `opus state`: `opus state list`
        handler = handler.resolve(args)
    if handler is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        if isinstance(handler, str):
            module_name, _, function_name = handler.partition(":")
            handler = getattr(importlib.import_module(module_name), function_name)
        context = CommandContext(args, manager)
        if getattr(args, "configures", True):  # every plugin gets its [plugins.NAME], once
            context.configure()
        call: Callable[[Any], int] = handler
        status = call(context) if takes_context(handler) else call(args)
        return int(status)
    except BrokenPipeError:  # the reader went away (`opus ... | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = getattr(args, "exit_status", 0)  # a run that failed still says so
        return int(status)
    except Exception as exc:
        return _failed(exc, debug)


def _failed(exc: Exception, debug: bool) -> int:
    """Report an error that ended a command: one line (the traceback under --debug)."""
    from opus_core.errors import OpusError

    if debug:
        import traceback

        traceback.print_exception(exc)
    # What was added on the way up (`add_note`) goes on the same line.
    message = "; ".join(" ".join(part.split()) for part in (str(exc), *_notes(exc)))
    if not isinstance(exc, OpusError):
        if not debug:
            sys.stderr.write(
                f"opus: internal error: {type(exc).__name__}: {message} (--debug shows where)\n"
            )
        return USAGE_ERROR
    sys.stderr.write(f"opus: error: {message}\n")
    return USAGE_ERROR


def _notes(exc: BaseException) -> list[str]:
    notes = getattr(exc, "__notes__", None)
    return [str(note) for note in notes] if isinstance(notes, list) else []


if __name__ == "__main__":
    sys.exit(main())
