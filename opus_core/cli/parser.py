"""The parser of `opus`: one-line usage errors (`Parser`), and `Commands`, what a plugin's
`opus_register_commands` adds its subcommands with."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any, NoReturn

from opus_core.version import __version__

if TYPE_CHECKING:
    from opus_core.cli import Handler
    from opus_core.plugin.manager import PluginManager

USAGE_ERROR = 2
"""The exit status of a usage error (and of any error `opus` reports in one line)."""


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


class Commands:
    """What `opus_register_commands` receives: `add` puts a subcommand on `opus`."""

    def __init__(self, subparsers: Any, common: Parser, wanted: str | None = None) -> None:
        self._subparsers = subparsers
        self._common = common
        self.names: list[str] = []
        self.wanted = wanted
        """The command the command line names, when known: a plugin may `list` its other
        commands rather than `add` them with every argument (the core does). None: every
        command is wanted whole (shell completion, the docs)."""

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

    def list(self, name: str, help: str) -> None:
        """Put `opus NAME` in `opus --help` without its arguments or handler, for a command
        that is not `wanted`; if the command line does run it, `opus` builds the parser
        again with every command whole."""
        if name in self.names:
            raise ValueError(f"opus already has a command {name!r}")
        listed = self._subparsers.add_parser(name, help=help, add_help=False)  # -h: all
        listed.set_defaults(listed_only=True)
        self.names.append(name)

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


def build_parser(manager: PluginManager, wanted: str | None = None) -> Parser:
    """The parser of `opus` with the commands of every plugin `manager` has (the core's
    are a plugin's too: `opus_core.cli.context.command_line_plugins()` makes that one).

    With `wanted`, the command the command line names ("" for none), the core builds
    only that command's parser whole and lists the others (see `Commands.list`).
    """
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
    manager.register_commands(Commands(subparsers, common, wanted))
    return parser
