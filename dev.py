"""Set up and check opus with nothing but Python 3.11 and pip.

python3 dev.py demo     install opus and its plugins into .venv and run the main job
python3 dev.py test     install the same plus the test tools and run every check and test
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PYTHON = BIN / "python"
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
EXAMPLE_PLUGINS = [ROOT / "examples" / "custom_runner"]  # installed for the tests only


def run(*args: str | os.PathLike[str], **kwargs: object) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    if completed.returncode:
        sys.exit(completed.returncode)


def install(extras: str) -> None:
    """Install opus-core (with `extras`) and every plugin, editable, unless already current."""
    plugins = PLUGINS + (EXAMPLE_PLUGINS if extras == "test" else [])
    files = [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in plugins)]
    digest = hashlib.sha256(extras.encode())
    for file in files:
        digest.update(file.read_bytes())
    stamp = VENV / f".installed-{extras or 'base'}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    if not PYTHON.exists():
        print(f"+ creating {VENV.name}", flush=True)
        venv.create(VENV, with_pip=True)
    core = f".[{extras}]" if extras else "."
    editable = [arg for plugin in plugins for arg in ("-e", str(plugin))]
    run(
        PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-e",
        core,
        *editable,
    )
    stamp.write_text(digest.hexdigest())


def demo() -> None:
    install("")
    run(BIN / "opus", "run", "--config", "examples/hello_world/opus.toml")


def test() -> None:
    install("test")
    run(BIN / "ruff", "check", ".")
    run(BIN / "mypy")
    run(PYTHON, "-m", "pytest", *sys.argv[2:])


COMMANDS = {"demo": demo, "test": test}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
