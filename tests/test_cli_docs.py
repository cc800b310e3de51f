"""docs/cli.md is generated from opus's argument parsers, and names every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from opus_core.cli import build_parser, docs
from opus_core.cli.context import command_line_plugins

ROOT = Path(__file__).resolve().parents[1]


def test_docs_cli_md_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opus_core.cli.docs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_the_stale_file_and_the_fix(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# CLI reference\n")
    assert docs.main(["--check", "--output", str(stale)]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert str(stale) in message and "python -m opus_core.cli.docs" in message
    assert docs.main(["--output", str(stale)]) == 0
    assert docs.main(["--check", "--output", str(stale)]) == 0


def test_every_command_and_action_has_its_section_with_its_usage() -> None:
    text = docs.render()
    parser = build_parser(command_line_plugins(autoload=False))
    names = []
    for _, command in docs.commands(parser):
        names.append(command.prog)
        names.extend(action.prog for _, action in docs.commands(command))
    assert {"opus run", "opus runs prune", "opus state clear", "opus completion"} <= set(names)
    for prog in names:
        assert f"\n## {prog}\n" in text or f"\n### {prog}\n" in text, prog
        assert f"usage: {prog} " in text, prog


def test_the_reference_does_not_depend_on_the_terminal(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docs.render()
    monkeypatch.setenv("COLUMNS", "300")
    assert docs.render() == narrow
