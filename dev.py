"""Set up and check opus with nothing but Python 3.11 and pip.

python3 dev.py demo     install opus and its plugins into .venv and run the main job
python3 dev.py test     install the same plus the test tools and run every check and test,
                        the documentation site's `mkdocs build --strict` among them, the
                        tests spread over a worker per core (`-n 0` for one process;
                        with no arguments, also `floor`; arguments go to pytest)
python3 dev.py test --fast
                        the checks (ruff, mypy, lint-imports) and the tests not marked
                        `slow` (no dask cluster, browser, long fuzzing or package
                        installs), without the site or `floor`; further arguments go to pytest
python3 dev.py floor    the plugin-system tests against the oldest pluggy and packaging allowed
python3 dev.py bench    install the baselines and print the benchmark table (benchmarks/)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
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
    extras = "test,bench" if extras == "bench" else extras
    files = [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in plugins)]
    digest = hashlib.sha256(extras.encode())
    for file in files:
        digest.update(file.read_bytes())
    stamp = VENV / f".installed-{extras.replace(',', '-') or 'base'}"
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


DEBIAN_PACKAGES = {"chromium": Path("/usr/bin/chromium"), "zsh": Path("/usr/bin/zsh")}
"""Debian packages the tests drive: the report's browser tests (chromium), and the zsh
completion script run in a real zsh."""


def install_debian_packages() -> None:
    """The `DEBIAN_PACKAGES` that are missing, from the system's own package sources only (no
    browser is downloaded from anywhere else: `playwright install` is never run).

    Where apt-get is missing or fails, exits with one line naming the packages and how to
    install them: the tests that need them are never skipped.
    """
    missing = [name for name, path in DEBIAN_PACKAGES.items() if not path.exists()]
    if not missing:
        return
    sudo = ["sudo"] if os.geteuid() != 0 else []
    steps = [[*sudo, "apt-get", "update"], [*sudo, "apt-get", "install", "-y", *missing]]
    where = ", ".join(f"{name} ({DEBIAN_PACKAGES[name]})" for name in missing)
    advice = (
        f"dev.py: the tests need {where}: install {' and '.join(missing)} with "
        "your system's package manager, then run dev.py test again"
    )
    absent = [tool for tool in (*sudo, "apt-get") if shutil.which(tool) is None]
    if absent:
        sys.exit(f"{advice} ({' and '.join(absent)} not found)")
    print(f"+ installing Debian packages the tests need: {', '.join(missing)}", flush=True)
    for step in steps:
        print("+", " ".join(step), flush=True)
        completed = subprocess.run(step, cwd=ROOT)
        if completed.returncode:
            failed = f"`{' '.join(step)}` failed with exit status {completed.returncode}"
            sys.exit(f"{advice} ({failed})")


def test() -> None:
    arguments = sys.argv[2:]
    fast = "--fast" in arguments
    if fast:
        arguments.remove("--fast")
    install("test")
    install_debian_packages()
    run(BIN / "ruff", "check", ".")
    run(BIN / "mypy")
    run(BIN / "lint-imports", "--no-logo")  # the layers of opus_core: [tool.importlinter]
    # a worker per core (pytest-xdist) unless the arguments say otherwise; a Ray cluster's
    # tests share one worker (their xdist_group)
    named = any(a.startswith(("-n", "--numprocesses")) for a in arguments)
    workers = [] if named else ["-n", "auto", "--dist", "loadgroup"]
    env = tests_environment()
    if fast:  # the tests marked `slow` (pyproject.toml) left out, and the site and floor
        run(PYTHON, "-m", "pytest", "-m", "not slow", *workers, *arguments, env=env)
        return
    docs()
    run(PYTHON, "-m", "pytest", *workers, *arguments, env=env)
    if not arguments:
        floor()


PYCACHE = VENV / "pycache"


def tests_environment() -> dict[str, str]:
    """The environment of the tests: bytecode cached, in `.venv/pycache` rather than beside
    the sources. The tests start `opus` in hundreds of processes; where
    PYTHONDONTWRITEBYTECODE is set, each would compile opus anew (CI took over twice as
    long)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def docs() -> None:
    """Build the documentation site (mkdocs.yml, docs/) with `--strict`: a broken link, a
    missing anchor or a page left out of the nav fails. The site goes to a temporary
    folder and is thrown away."""
    quiet = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    with tempfile.TemporaryDirectory(prefix="opus-site-") as site:
        run(BIN / "mkdocs", "build", "--strict", "--site-dir", site, env=quiet)


FLOOR_VENV = ROOT / ".venv-floor"
FLOORED = ("pluggy", "packaging", "cloudpickle")
"""Dependencies whose declared minimum (`name>=X` in pyproject.toml) is what `floor` tests."""
FLOOR_TESTS = (
    "tests/test_plugin_system.py",
    "tests/test_plugins.py",
    "tests/test_plugin_manager.py",
    "tests/test_remote.py",
)
FLOOR_PLUGINS = [ROOT / "plugins" / "opus-plugin-file-persistence"]
"""The plugins `FLOOR_TESTS` use, the only ones installed in `.venv-floor` (the others, Dask
and Ray among them, would only make it slower to build)."""


def floors() -> list[str]:
    """`name==X` for each of `FLOORED`, X its minimum in opus-core's dependencies."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement.strip())
        if found and found.group(1).lower() in FLOORED:
            pins.append(f"{found.group(1)}=={found.group(2)}")
    return pins


def floor() -> None:
    """The plugin-system tests in `.venv-floor`, with the oldest pluggy, packaging and
    cloudpickle that opus-core declares it works with, so the declared floors stay true."""
    python = FLOOR_VENV / "bin" / "python"
    pins = floors()
    stamp = FLOOR_VENV / ".installed"
    digest = hashlib.sha256()
    for project in [ROOT, *FLOOR_PLUGINS, *EXAMPLE_PLUGINS]:
        digest.update((project / "pyproject.toml").read_bytes())
    if not stamp.exists() or stamp.read_text() != digest.hexdigest():
        print(f"+ creating {FLOOR_VENV.name} with {' '.join(pins)}", flush=True)
        venv.create(FLOOR_VENV, with_pip=True, clear=True)
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        plugins = [arg for p in FLOOR_PLUGINS + EXAMPLE_PLUGINS for arg in ("-e", str(p))]
        run(*pip, "-e", ".", *plugins, "pytest", "pytest-timeout", "hypothesis", *pins)
        stamp.write_text(digest.hexdigest())
    shown = f"import importlib.metadata as m; print(*(n + ' ' + m.version(n) for n in {FLOORED}))"
    run(python, "-c", shown)
    run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FLOOR_TESTS)


PREFECT_VENV = ROOT / ".bench" / "prefect"
PREFECT = "prefect==3.9.1"
"""The one Prefect release the benchmarks compare with."""

FASTAPI_FLOOR = """
import importlib.metadata, re
for requirement in importlib.metadata.requires("prefect") or []:
    if requirement.startswith("fastapi"):
        print(re.search(r">=\\s*([0-9.]+)", requirement).group(1))
"""


def install_prefect() -> None:
    """Prefect 3 in a virtual environment of its own, its server pinned to the oldest FastAPI
    it allows (newer FastAPI releases break its temporary server); failures go to WHY."""
    python = PREFECT_VENV / "bin" / "python"
    why = PREFECT_VENV / "WHY"
    if python.exists() or why.exists():
        return
    venv.create(PREFECT_VENV, with_pip=True)
    steps = [
        [str(python), "-m", "pip", "install", "--quiet", PREFECT],
        [str(python), "-c", FASTAPI_FLOOR],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            why.write_text(f"{' '.join(step[2:5])} failed: {done.stderr.strip()[-500:]}\n")
            python.unlink(missing_ok=True)
            return
    floor = done.stdout.strip()
    pin = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"fastapi=={floor}"],
        capture_output=True,
        text=True,
    )
    if pin.returncode:
        why.write_text(f"pinning fastapi=={floor} failed: {pin.stderr.strip()[-500:]}\n")
        python.unlink(missing_ok=True)


def bench() -> None:
    install("bench")
    install_prefect()
    run(PYTHON, "benchmarks/bench.py", *sys.argv[2:])


COMMANDS = {"demo": demo, "test": test, "floor": floor, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
