"""`python -m opus_core.cli.docs [--check]`: write `docs/cli.md` from `opus`'s parsers.

Everything in `docs/cli.md` comes from `build_parser()` with the core's own plugins
only (no installed plugin's commands): every command and subcommand, with the help
`opus … --help` prints, at a fixed width. Change a command's arguments or help, then
run this module; `--check` (run by the tests) exits 1 if the file is stale.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
"""Where the CLI reference goes: `docs/cli.md` of the source tree."""

REGENERATE = "python -m opus_core.cli.docs"

WIDTH = 100
"""The width the help is formatted to, whatever the terminal."""


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    # argparse's formatter takes its width from $COLUMNS (shutil.get_terminal_size).
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width + 2)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """`parser`'s subcommands in the order they were added: (help, parser) pairs."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((helps.get(name, ""), sub))
    return found


def _section(help: str, parser: argparse.ArgumentParser, depth: int) -> list[str]:
    parts = [f"{'#' * depth} {parser.prog}"]
    if help:
        parts.append(help[0].upper() + help[1:] + ("" if help.endswith(".") else "."))
    parts.append(f"```text\n{parser.format_help().rstrip()}\n```")
    for sub_help, sub in commands(parser):
        parts.extend(_section(sub_help, sub, depth + 1))
    return parts


def render() -> str:
    """The whole of `docs/cli.md`."""
    from opus_core.cli.context import command_line_plugins
    from opus_core.cli.parser import build_parser

    with _columns(WIDTH):
        parser = build_parser(command_line_plugins(autoload=False))
        top = commands(parser)
        table = ["| command | what |", "|---|---|"]
        for help, sub in top:
            anchor = sub.prog.replace(" ", "-")
            table.append(f"| [`{sub.prog}`](#{anchor}) | {help} |")
        parts = [
            "# CLI reference",
            f"<!-- Generated from opus's argument parsers by `{REGENERATE}`; do not edit. -->",
            "Every command of `opus` as opus-core provides it, with what `--help` prints. "
            "Installed plugins may add commands of their own (`opus --help` lists them). "
            "[The command line](command-line.md) is the guide.",
            "\n".join(table),
            f"## opus\n\n```text\n{parser.format_help().rstrip()}\n```",
        ]
        for help, sub in top:
            parts.extend(_section(help, sub, 2))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `docs/cli.md`, or with `--check` exit 1 if it is not what would be written."""
    from opus_core.files import generated_file_main

    return generated_file_main(
        argv,
        module="opus_core.cli.docs",
        default=DOCS,
        source="opus's command-line parsers",
        render=render,
    )


if __name__ == "__main__":
    sys.exit(main())
