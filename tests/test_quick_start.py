"""The README's quick start runs as written: the shop, its failure, the fix and `--resume`.

Each `$ command` of its console blocks runs in bash, in order, in one folder, with the
files the README shows; what the README prints under a command is what it prints, the
clock, durations and the folder aside. Off a terminal, stderr (the log lines) and stdout
(the results) are compared each on their own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHELL_STEPS = "\n## Quick start: shell steps"
QUICK_START = README[README.index("\n## Quick start") : README.index(SHELL_STEPS)]
BUILD_STEPS = README[README.index(SHELL_STEPS) : README.index("\n## Documentation")]
EXAMPLE = ROOT / "examples" / "make_style"


def normal(text: str, folder: Path) -> list[str]:
    text = text.replace(str(folder), "/tmp")
    text = re.sub(r"\b\d\d:\d\d:\d\d\b", "HH:MM:SS", text)
    text = re.sub(r"\b\d+\.\d\ds\b", "N.NNs", text)
    return [line.rstrip() for line in text.splitlines()]


def environment(tmp_path: Path) -> dict[str, str]:
    """`opus` on the PATH, and state and configuration of the test's own."""
    bin_dir = Path(sys.executable).parent
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        NO_COLOR="1",
    )
    env.pop("OPUS_CONFIG", None)
    return env


def test_the_quick_start_runs_as_the_readme_shows(tmp_path: Path) -> None:
    blocks = dict(re.findall(r"```(toml|python)\n(.*?)```", QUICK_START, re.S))
    sessions = re.findall(r"```console\n(.*?)```", QUICK_START, re.S)
    env = environment(tmp_path)
    folder = tmp_path
    commands = status = 0
    for session in sessions:
        steps = re.split(r"^\$ ", session, flags=re.M)[1:]
        for step in steps:
            command, _, shown = step.partition("\n")
            if command.startswith("mkdir shop && cd shop"):
                folder = tmp_path / "shop"
                folder.mkdir()
                (folder / "opus.toml").write_text(blocks["toml"])
                (folder / "etl.py").write_text(blocks["python"])
                continue
            if command == "echo $?":
                assert shown.strip() == str(status), command
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            status = done.returncode
            commands += 1
            expected = normal(shown, Path("/tmp/shop"))
            printed = normal(done.stdout, folder) + normal(done.stderr, folder)
            assert sorted(printed) == sorted(expected), (command, done.stdout, done.stderr)
            if command.startswith("opus run") and done.stderr:
                assert [line for line in expected if line in normal(done.stderr, folder)] == normal(
                    done.stderr, folder
                ), command
    assert commands >= 6


def test_the_shell_steps_quick_start_runs_as_the_readme_shows_in_a_copy_of_its_example(
    tmp_path: Path,
) -> None:
    import shutil

    assert re.findall(r"```toml\n(.*?)```", BUILD_STEPS, re.S) == [
        (EXAMPLE / "opus.toml").read_text()
    ]
    folder = tmp_path / "make_style"
    shutil.copytree(EXAMPLE, folder)
    env = environment(tmp_path)
    (session,) = re.findall(r"```console\n(.*?)```", BUILD_STEPS, re.S)
    steps = re.split(r"^\$ ", session, flags=re.M)[1:]
    for step in steps:
        command, _, shown = step.partition("\n")
        done = subprocess.run(
            ["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (command, done.stderr)
        printed = normal(done.stdout, folder) + normal(done.stderr, folder)
        assert sorted(printed) == sorted(normal(shown, folder)), (command, done.stderr)
    assert (folder / "build" / "report.txt").read_text().split() == ["4", "orders"]
    assert len(steps) == 4
