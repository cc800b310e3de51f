"""The arguments several commands share, and the types that check them: which tasks
(`selection_arguments`, for `opus run`, `opus tasks` and `opus graph`), `--tb`,
`--durations`, `--set`, `-j` and the counts of `--limit` and `--keep`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opus_core.selection import KeywordExpression

TB_STYLES = ("short", "long", "line", "no")
"""The styles of `--tb`: how the tracebacks of failed tasks are printed."""


def parameter_argument(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE`: the key, and the value read as a TOML value (`3`, `true`,
    `[1, 2]`, `"text"`), or as the text itself when it is not one."""
    import tomli

    key, equals, value = text.partition("=")
    if not equals or not key or key != key.strip() or "}" in key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (a key without spaces or '}}', then '=', then "
            "the value: --set region=eu-west-1)"
        )
    try:
        return key, tomli.loads(f"value = {value}")["value"]
    except tomli.TOMLDecodeError:
        return key, value


def selection_arguments(parser: argparse.ArgumentParser, running: bool = False) -> None:
    """`NAME ...`, `-k EXPR`, `--command`, `--context`: the tasks `opus run` runs (`running`),
    or those `opus tasks` lists and `opus graph` draws."""
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"{'run ' if running else ''}only these tasks and what they depend on",
    )
    parser.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        type=keyword_expression,
        default=None,
        help="run only the tasks EXPR matches and what they depend on: words found in task "
        "names, or key=value for a label, with and, or, not and parentheses "
        "(-k 'tier=data and not cache')"
        if running
        else "only the tasks EXPR matches (as opus run -k) and what they depend on",
    )
    parser.add_argument(
        "--command",
        default="apply",
        help=f"the command{' to run' if running else ''} (default: apply)",
    )
    parser.add_argument("--context", default="default", help="the context (default: default)")


def traceback_argument(parser: argparse.ArgumentParser) -> None:
    """`--tb STYLE`: how `opus run` and `opus runs show` print the tracebacks of failures."""
    parser.add_argument(
        "--tb",
        choices=TB_STYLES,
        default="short",
        help="tracebacks of failed tasks: the last frames (short, the default), all of "
        "them (long), one line per task (line), or none (no)",
    )


def keyword_expression(text: str) -> KeywordExpression:
    """The `-k EXPR` argument: a parsed expression, or a usage error naming it."""
    from opus_core.selection import KeywordExpression

    try:
        return KeywordExpression(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole_number(least: int) -> Callable[[str], int]:
    """An argument type: a whole number of at least `least`, else a usage error."""

    def argument(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = least - 1
        if number < least:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {least}, got {value!r}"
            )
        return number

    return argument


count_argument = whole_number(0)
"""`--durations N`, `--limit N`, `--keep N`: a whole number of at least 0."""

workers_argument = whole_number(1)
"""`-j N`: a whole number of at least 1."""


def durations_argument(parser: argparse.ArgumentParser) -> None:
    """`--durations N`, as pytest's: the N slowest tasks (0: every task)."""
    parser.add_argument(
        "--durations",
        metavar="N",
        type=count_argument,
        default=None,
        help="the N slowest tasks (0: all), each with how long it waited for its "
        "dependencies and then for a worker",
    )
