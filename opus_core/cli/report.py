"""`opus report [RUN] -o FILE` and `opus run --report FILE`: a run's HTML report.

The page is made by `opus_core.html_report` from the run history the
configured persistence keeps; nothing else is run to make it. This module is
imported when `opus` starts (to add the command), so it imports nothing heavy
until a report is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opus_core.cli.commands import COMMAND_HELP
from opus_core.errors import OpusError

if TYPE_CHECKING:
    from opus_core.cli import CommandContext, Commands
    from opus_core.persistence import StatePersistence

DEFAULT_OUTPUT = "report.html"

EPILOG = """\
examples:
  opus report                          the latest run, written to report.html
  opus report 20260115T0930 -o a.html  the run whose id begins 20260115T0930
  opus run --report report.html        run, then write the report (also when tasks fail)

The file is one self-contained page: open it in any browser, mail it, attach it to a
CI job. It fetches nothing from the network."""


def add_command(commands: Commands) -> None:
    """Add `opus report [RUN] [-o FILE]`."""
    parser = commands.add(
        "report",
        "opus_core.cli.report:report",
        help=COMMAND_HELP["report"],
        description="Write one self-contained HTML file showing a run from the history: the "
        "task graph coloured by status, a timeline of every attempt, and each task's error "
        "and traceback on click.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run",
        nargs="?",
        default="latest",
        metavar="RUN",
        help="the run: latest (the default), an id, or the beginning of one (opus runs list)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=DEFAULT_OUTPUT,
        help=f"the HTML file to write (default: {DEFAULT_OUTPUT})",
    )


def report(context: CommandContext) -> int:
    """`opus report`: write the report of the run `RUN` to `-o FILE`; 0 when written."""
    from opus_core.history import find_run

    args = context.args
    check_writable(args.output)
    persistence = context.persistence
    if type(persistence).name == "memory":
        raise OpusError(
            "no run history to report on: the memory persistence forgets every run when opus "
            'exits; set [opus] persistence = "sqlite" (or "file") in opus.toml, run, then '
            "opus report (or use opus run --report FILE)"
        )
    run = find_run(persistence, args.run)
    _write(run, args.output)
    return 0


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise `OpusError` naming `path` unless a report can be written there: checked before
    a run starts, so that `opus run --report` does not run everything to fail at the end.
    Where the report goes is `opus_core.html_report.report_destination`'s answer: the file a
    symlink points to, or a device or FIFO written into."""
    from opus_core.html_report import report_destination

    given = os.fspath(path)
    target, replace = report_destination(path)
    if not replace:  # a device, FIFO or descriptor: written into, if it may be
        if not os.access(target, os.W_OK):
            raise OpusError(f"cannot write the report to {given}: permission denied")
        return
    shown, folder = given, Path(given).parent
    if os.path.islink(given):
        shown, folder = f"{given} (a symlink to {target})", target.parent
    if not folder.is_dir():
        raise OpusError(
            f"cannot write the report to {shown}: there is no folder {folder}; "
            "create it, or choose another file"
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise OpusError(
            f"cannot write the report to {shown}: permission denied; "
            "choose a file in a folder you can write to"
        )


def write_run_report(
    persistence: StatePersistence, run_id: str | None, path: str | os.PathLike[str]
) -> Path:
    """Write the report of the run `run_id` (just ended) to `path`, for `opus run --report`."""
    from opus_core.history import find_run

    if run_id is None:
        raise OpusError(
            f"no report written to {os.fspath(path)}: the run was not recorded in the history "
            f"of persistence {persistence.name!r}"
        )
    return _write(find_run(persistence, run_id), path)


def _write(run: dict[str, object], path: str | os.PathLike[str]) -> Path:
    from opus_core.html_report import write_report

    written = write_report(run, path)
    sys.stderr.write(f"opus: report of run {run.get('id')} written to {os.fspath(written)}\n")
    return written
