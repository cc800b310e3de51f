"""The `opus` command line."""

from __future__ import annotations

import argparse
import sys

from opus_core.version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `opus` (importing nothing heavy)."""
    parser = argparse.ArgumentParser(
        prog="opus", description="A local-first task processing engine."
    )
    parser.add_argument("--version", action="version", version=f"opus {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `opus` console script."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
