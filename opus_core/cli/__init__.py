"""The `opus` command line.

Every command, the core's own included, is added by a plugin through
`opus_register_commands`: the core's are the plugin `builtin.commands`
(`opus_core.cli.commands`), which the command line's plugin manager registers
(`command_line_plugins`); a command's module is imported only when it runs,
so `opus --help` costs little more than finding the plugins. Each command's
handler gets a `CommandContext` (or, if it does not ask for one, the parsed
arguments), and the plugins are configured once, here, before it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from opus_core.cli.context import CommandContext, command_line_plugins, takes_context
from opus_core.version import __version__

if TYPE_CHECKING:
    from opus_core.plugin.manager import PluginManager


USAGE_ERROR = 2
INTERRUPTED = 130
TERMINATED = 143
_terminated = False
_signals = 0


def interrupted_status() -> int:
    """The exit status of a run that was stopped: 143 after SIGTERM, 130 after Ctrl-C."""
    return TERMINATED if _terminated else INTERRUPTED


def _on_stop_signal(signum: int, frame: object) -> None:
    # Ctrl-C and SIGTERM (docker stop, systemd, a CI time-out) stop opus the same way:
    # running work is stopped, records are kept, the summary is printed; only the exit
    # status differs. A second signal while that happens is ignored — raised again, it
    # would cut the clean-up short — and a third ends opus at once; so does the end of
    # the grace (`stop_grace`) when the clean-up itself hangs (a plugin's hook, say).
    global _terminated, _signals
    _signals += 1
    if _signals == 1:
        _terminated = signum == signal.SIGTERM
        threading.Thread(target=_stop_deadline, name="opus-stop", daemon=True).start()
        raise KeyboardInterrupt
    if _signals >= 3:
        sys.stderr.write("opus: stopped without cleaning up (a third signal)\n")
        sys.stderr.flush()
        os._exit(interrupted_status())


STOP_GRACE_ENV = "OPUS_STOP_GRACE"
STOP_GRACE = 10.0
"""Seconds `opus` has, after the first Ctrl-C or SIGTERM, to stop cleanly (`$OPUS_STOP_GRACE`
changes it); past them it says what it was waiting for and exits anyway."""

_stopped = threading.Event()  # set when main() returns: the stop ended in time
_callers_threads: frozenset[threading.Thread] = frozenset()  # running when main() was called


def env_seconds(name: str, default: float, least: float = 0.0) -> float:
    """The environment variable `name` as a finite number of seconds above `least` (or equal
    to 0 when `least` is 0), else `default`."""
    try:
        seconds = float(os.environ.get(name, default))
    except ValueError:
        return default
    if seconds == least == 0.0 or least < seconds < float("inf"):
        return seconds
    return default


def stop_grace() -> float:
    """`$OPUS_STOP_GRACE` if it is a positive number of seconds, else `STOP_GRACE`."""
    return env_seconds(STOP_GRACE_ENV, STOP_GRACE, least=1e-9)


def _stop_deadline() -> None:
    """After the first stop signal: end opus if stopping takes longer than the grace."""
    grace = stop_grace()
    if _stopped.wait(grace):
        return
    from opus_core.plugin.guard import ACTIVE

    main = threading.main_thread().ident
    active = ACTIVE.get(main) if main is not None else None
    what = f"plugin {active[0]!r} in {active[1]}" if active else "the running tasks to stop"
    sys.stderr.write(
        f"opus: still stopping after {grace:g}s, waiting for {what}; "
        "exiting without finishing the clean-up\n"
    )
    sys.stderr.flush()
    os._exit(interrupted_status())


def exit_leaving_threads(status: int) -> None:
    """End opus now with `status` if task threads it stopped waiting for still run.

    A Python thread cannot be killed: a task that timed out or was stopped on a
    thread runner runs on, and the interpreter would wait for it at exit — for
    ever, if it never returns. The run is over and its records are saved, so
    opus exits and leaves those threads behind, saying so. Threads that already ran
    when `main()` was called are those of the program that called it, not task threads:
    they are not counted.
    """
    main = threading.main_thread()
    left = [
        t
        for t in threading.enumerate()
        if t is not main and not t.daemon and t.is_alive() and t not in _callers_threads
    ]
    if not left:
        return
    sys.stderr.write(
        f"opus: {len(left)} task thread(s) that cannot be killed were still running; "
        "exiting without waiting for them\n"
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        message = _suggest_choice(message)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_INVALID_CHOICE = r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>.*)\)$"


def _suggest_choice(message: str) -> str:
    """argparse's "invalid choice" message, with "did you mean" when a choice is close."""
    found = re.search(_INVALID_CHOICE, message)  # compiled on a usage error only
    if found is None or "did you mean" in message:
        return message
    import difflib

    choices = re.findall(r"'([^']*)'", found["choices"])
    close = difflib.get_close_matches(found["value"], choices, n=1)
    if not close:
        return message
    value = found["value"]
    return f"{message[: found.start()]}invalid choice: {value!r}; did you mean {close[0]!r}?"


def _common() -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the opus.toml to use (default: $OPUS_CONFIG, else the nearest one)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
    )
    common.add_argument(
        "--trace-plugins",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print each hook call, the plugins that answered and its duration on stderr "
        "(as $OPUS_TRACE_PLUGINS=1)",
    )
    common.add_argument(
        "-p",
        dest="plugins",
        metavar="MODULE",
        action="append",
        default=argparse.SUPPRESS,
        help="load MODULE (or NAME=MODULE) as a plugin (repeatable; as $OPUS_PLUGINS)",
    )
    return common


Handler = Callable[[CommandContext], int] | Callable[[argparse.Namespace], int]
"""A command's handler: a function of a `CommandContext` (its first parameter annotated so)
or of the parsed arguments, returning the exit status."""

__all__ = ["CommandContext", "Commands", "Handler", "build_parser", "main"]


class Commands:
    """What `opus_register_commands` receives: `add` puts a subcommand on `opus`."""

    def __init__(self, subparsers: Any, common: Parser) -> None:
        self._subparsers = subparsers
        self._common = common
        self.names: list[str] = []

    def add(
        self,
        name: str,
        handler: Handler | str | None,
        help: str,
        *,
        configure: bool = True,
        **kwargs: Any,
    ) -> argparse.ArgumentParser:
        """Add `opus NAME`; returns its parser, for arguments and sub-subcommands.

        `handler` returns the exit status; it is called with a `CommandContext`
        if its first parameter is annotated `CommandContext`, else with the
        parsed arguments (`argparse.Namespace`). It may be a `"module:function"`
        string imported when the command runs, or None for a group whose
        subcommands have handlers.

        Before the handler runs, opus reads the configuration, checks
        `[plugins.*]` and hands every plugin its options (`opus_configure`).
        `configure=False` skips that, for a command that must work whatever
        the configuration holds (`opus config path`, `opus plugins list`).
        Other keyword arguments go to `argparse`'s `add_parser`
        (`description`, `epilog`, ...).
        """
        if name in self.names:
            raise ValueError(f"opus already has a command {name!r}")
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help, parents=[self._common], **kwargs
        )
        if handler is not None:
            parser.set_defaults(handler=handler, configures=configure)
        self.names.append(name)
        return parser

    def add_group(
        self, name: str, help: str, default: str | None = None, description: str = ""
    ) -> Commands:
        """`opus NAME ACTION`: a command of its own actions (`group` of a new `add`), its
        help saying which action runs when none is given."""
        if default is not None:
            description = f"{description} Without an action: opus {name} {default}.".strip()
        return self.group(self.add(name, None, help=help, description=description), default)

    def group(self, parser: argparse.ArgumentParser, default: str | None = None) -> Commands:
        """The subcommands of `parser` (`opus NAME ACTION`), added the same way.

        With `default`, `opus NAME` alone runs `opus NAME DEFAULT` (as `llm
        plugins` lists them); without, an action is required.
        """
        actions = parser.add_subparsers(
            dest="action", metavar="ACTION", required=default is None, parser_class=Parser
        )
        if default is not None:
            parser.set_defaults(handler=DefaultAction(actions, default))
        return Commands(actions, self._common)


class DefaultAction:
    """The handler of a group run without an action: the action it defaults to."""

    def __init__(self, actions: Any, name: str) -> None:
        self.actions = actions
        self.name = name

    def resolve(self, args: argparse.Namespace) -> Handler | str | None:
        """Fill `args` with the default action's own defaults; return its handler."""
        parser: argparse.ArgumentParser = self.actions.choices[self.name]
        for key, value in vars(parser.parse_args([])).items():
            if key == "handler" or not hasattr(args, key):
                setattr(args, key, value)
        args.action = self.name
        handler: Handler | str | None = getattr(args, "handler", None)
        return handler


def build_parser(manager: PluginManager | None = None) -> Parser:
    """The parser of `opus` with every plugin's commands (the core's are a plugin's too);
    `manager` defaults to a new `command_line_plugins()`."""
    common = _common()
    parser = Parser(
        prog="opus",
        parents=[common],
        description="opus: a local-first task processing engine.",
        epilog="Exit status: 0 all well, 1 a task failed, 2 a usage, configuration or "
        "plugin error, 5 nothing in scope, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"opus {__version__}")
    subparsers = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    (manager or command_line_plugins()).register_commands(Commands(subparsers, common))
    return parser


def _early(argv: list[str]) -> argparse.Namespace:
    """The options that decide which plugins load, read before the full parse."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config", default=None)
    early.add_argument("--debug", action="store_true")
    early.add_argument("--trace-plugins", action="store_true")
    early.add_argument("-p", dest="plugins", action="append", default=[])
    known, _ = early.parse_known_args(argv)
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
    global _terminated, _signals, _callers_threads
    _terminated, _signals = False, 0
    _callers_threads = frozenset(threading.enumerate())
    _stopped.clear()
    saved = None
    if threading.current_thread() is threading.main_thread():
        saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
    folder = os.getcwd()  # `opus run` works in the project folder; a caller gets its own back
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # Ctrl-C, wherever it lands: loading plugins, parsing, running
        from opus_core.plugin.trace import PluginImportInterrupted

        how = "terminated" if _terminated else "interrupted"
        where = f" {exc}" if isinstance(exc, PluginImportInterrupted) else ""
        sys.stderr.write(f"opus: {how}{where}\n")
        exit_leaving_threads(interrupted_status())
        return interrupted_status()
    finally:
        _stopped.set()
        if saved is not None:  # as they were, for a program that called main() itself
            signal.signal(signal.SIGTERM, saved[0])
            signal.signal(signal.SIGINT, saved[1])
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
        parser = build_parser(manager)
    except Exception as exc:
        return _failed(exc, debug)
    args = parser.parse_args(argv)
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
