"""What the README says about set-up, and the docs about processors and scripts on dask, is
what the code does."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from opus_core.processor import DEFAULT_COMMANDS, PROCESS_TASK_PARAMETERS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
FUNCTION_TASKS = (ROOT / "docs" / "function-tasks.md").read_text()


def section(title: str, text: str = README) -> str:
    """The text of the section headed `title`, up to the next heading."""
    start = text.index(f"\n{title}\n")
    end = re.search(r"\n#{2,3} ", text[start + 1 :])
    return text[start : start + 1 + end.start()] if end else text[start:]


def dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_setup_section_names_the_job_dev_py_demo_runs() -> None:
    demo = inspect.getsource(dev().demo)
    job = re.search(r'"run", "--config", "([^"]+)"', demo)
    assert job, demo
    assert f"`opus run --config {job.group(1)}`" in section("## Set-up: two commands")
    # and nothing says dev.py demo runs something else
    for sentence in re.split(r"(?<=[.;])\s", " ".join(README.split())):
        if "dev.py demo` runs" in sentence:
            assert job.group(1) in sentence, sentence


def test_the_setup_section_names_the_debian_packages_and_apt_get() -> None:
    setup = " ".join(section("## Set-up: two commands").split())
    packages = list(dev().DEBIAN_PACKAGES)
    assert f"apt-get install -y {' '.join(packages)}" in setup
    for name in packages:
        assert f"`{name}`" in setup
    assert "nothing else" not in setup


def test_the_tutorial_documents_what_a_processor_declares() -> None:
    text = " ".join(section("## Hello world", TUTORIAL).split())
    defaults = "(" + ", ".join(f'"{c}"' for c in DEFAULT_COMMANDS) + ")"
    assert f"`commands` it supports (default `{defaults}`)" in text
    assert 'the `versions` it handles (default `("v1",)`)' in text
    call = ", ".join(f"{name}=..." for name in PROCESS_TASK_PARAMETERS)
    assert f"`process_task({call})`" in text


@pytest.mark.slow
def test_the_composition_snippet_runs_as_a_script_on_dask(tmp_path: Path) -> None:
    snippets = re.findall(r"```python\n(.*?)```", FUNCTION_TASKS, re.S)
    (snippet,) = [s for s in snippets if 'RUNNER = "threadpool"  # or' in s]
    assert 'if __name__ == "__main__":' in snippet
    script = tmp_path / "feed.py"
    script.write_text(snippet.replace('RUNNER = "threadpool"', 'RUNNER = "dask"', 1))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "100" and lines[-1] == "8", result.stdout
    assert "its input 'transform' failed: TypeError" in result.stdout


def test_the_readme_stays_a_front_door() -> None:
    assert len(README.splitlines()) <= 300, "move the detail into a page of docs/"
