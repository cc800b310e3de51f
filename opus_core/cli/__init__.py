"""The `opus` command line.

This module imports nothing but argparse, so `opus --help` and `opus --version`
stay fast; each command's module is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, NoReturn

from opus_core.version import __version__

USAGE_ERROR = 2
INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    return common


def build_parser() -> Parser:
    """The parser of `opus` and its commands."""
    common = _common()
    parser = Parser(
        prog="opus", parents=[common], description="opus: a local-first task processing engine."
    )
    parser.add_argument("--version", action="version", version=f"opus {__version__}")
    commands = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)

    plugins = commands.add_parser("plugins", help="list the installed plugins", parents=[common])
    plugins_commands = plugins.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    listing = plugins_commands.add_parser(
        "list", help="every plugin, built-ins included", parents=[common]
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler="plugins:list_plugins")

    run = commands.add_parser(
        "run", help="run the [[tasks]] of the configuration", parents=[common]
    )
    run.add_argument("--command", default="apply", help="the command to run (default: apply)")
    run.add_argument("--context", default="default", help="the context (default: default)")
    run.add_argument("--runner", default=None, help="a runner name, overriding [opus] runner")
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip tasks that already succeeded with the same manifest",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (order, and what is left out and why); run nothing",
    )
    run.set_defaults(handler="run:run")

    config = commands.add_parser(
        "config", help="show, create or locate opus.toml", parents=[common]
    )
    config_commands = config.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    show = config_commands.add_parser(
        "show", parents=[common], help="the merged configuration and where each value is from"
    )
    show.set_defaults(handler="config:show")
    init = config_commands.add_parser(
        "init", parents=[common], help="write a commented starter opus.toml"
    )
    init.add_argument("path", nargs="?", default="opus.toml", help="where (default: ./opus.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler="config:init")
    path = config_commands.add_parser(
        "path", parents=[common], help="which configuration files are read"
    )
    path.set_defaults(handler="config:path")

    state = commands.add_parser(
        "state", help="what the configured persistence holds", parents=[common]
    )
    state_commands = state.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=Parser
    )
    state_commands.add_parser(
        "list", parents=[common], help="every identifier with state"
    ).set_defaults(handler="state:list_state")
    state_show = state_commands.add_parser("show", parents=[common], help="the state of one id")
    state_show.add_argument("id")
    state_show.set_defaults(handler="state:show")
    clear = state_commands.add_parser(
        "clear", parents=[common], help="forget the state of one id, or of all"
    )
    clear.add_argument("id", nargs="?")
    clear.set_defaults(handler="state:clear")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `opus` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return USAGE_ERROR
    debug = getattr(args, "debug", False)
    module_name, _, function_name = args.handler.partition(":")
    try:
        module: Any = importlib.import_module(f"opus_core.cli.{module_name}")
        status: int = getattr(module, function_name)(args)
        return status
    except KeyboardInterrupt:
        sys.stderr.write("opus: interrupted\n")
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (`opus ... | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        from opus_core.errors import OpusError

        if debug:
            import traceback

            traceback.print_exc()
        if not isinstance(exc, OpusError):
            if not debug:
                sys.stderr.write(
                    f"opus: internal error: {type(exc).__name__}: {exc} (--debug shows where)\n"
                )
            return USAGE_ERROR
        message = " ".join(str(exc).split())
        sys.stderr.write(f"opus: error: {message}\n")
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
