"""`dev.py test` installs the Debian packages the tests drive, and says so; where it cannot,
it stops with one line naming them and how to install them (the tests are never skipped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install_debian_packages(
    tmp_path: Path, tools: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`dev.install_debian_packages()` in a fresh interpreter, with chromium missing and a PATH
    holding only `tools` (name: shell script body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in tools.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    code = (
        "import dev\n"
        "from pathlib import Path\n"
        f"dev.DEBIAN_PACKAGES = {{'chromium': Path({str(tmp_path / 'no-chromium')!r})}}\n"
        "dev.install_debian_packages()\n"
    )
    environment = {**os.environ, "PATH": str(bin_dir)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


SUDO = 'exec "$@"'  # for a run as a user other than root, which goes through sudo


def test_without_apt_get_it_stops_with_one_line_naming_the_packages(tmp_path: Path) -> None:
    result = install_debian_packages(tmp_path, {"sudo": SUDO})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dev.py: the tests need chromium ({tmp_path / 'no-chromium'}): install chromium with "
        "your system's package manager, then run dev.py test again (apt-get not found)"
    ]


def test_when_apt_get_fails_it_stops_with_one_line_naming_the_packages(tmp_path: Path) -> None:
    result = install_debian_packages(tmp_path, {"sudo": SUDO, "apt-get": "exit 100"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dev.py: the tests need chromium (")
    assert "install chromium with your system's package manager" in last
    assert "apt-get update` failed with exit status 100" in last


def test_it_says_what_it_installs_before_running_apt_get(tmp_path: Path) -> None:
    log = tmp_path / "apt-get.log"
    result = install_debian_packages(tmp_path, {"sudo": SUDO, "apt-get": f'echo "$@" >> {log}'})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "+ installing Debian packages the tests need: chromium"
    assert log.read_text().splitlines() == ["update", "install -y chromium"]


def test_nothing_is_run_when_the_packages_are_there(tmp_path: Path) -> None:
    code = (
        "import dev, sys\nfrom pathlib import Path\n"
        "dev.DEBIAN_PACKAGES = {'python': Path(sys.executable)}\n"
        "dev.install_debian_packages()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_tests_run_with_bytecode_cached_in_the_venv_not_beside_the_sources() -> None:
    code = "import dev, json; print(json.dumps(dev.tests_environment()))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    env = json.loads(done.stdout)
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(ROOT / ".venv" / "pycache")
    assert env["PATH"] == os.environ["PATH"]  # the rest as it was
