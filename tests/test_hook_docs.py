"""docs/hooks.md is generated from opus_core/plugin/spec.py, and every hook there is documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from opus_core.plugin import docs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = docs.hooks()


def is_lifecycle_notification(hook: docs.Hook) -> bool:
    return hook.section.startswith("run lifecycle")


def test_docs_hooks_md_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "opus_core.plugin.docs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_the_stale_file_and_the_fix(tmp_path: Path, capsys) -> None:
    stale = tmp_path / "hooks.md"
    stale.write_text("# opus hooks\n")
    assert docs.main(["--check", "--output", str(stale)]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert str(stale) in message and "python -m opus_core.plugin.docs" in message
    assert docs.main(["--output", str(stale)]) == 0
    assert docs.main(["--check", "--output", str(stale)]) == 0


def test_every_hook_is_in_a_section_and_in_the_docs() -> None:
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert {hook.section.partition(":")[0] for hook in HOOKS} == {
        "registration",
        "tasks",
        "run lifecycle",
    }
    for hook in HOOKS:
        assert f"\n### {hook.name}\n" in text


def test_firstresult_hooks_are_marked() -> None:
    marked = {hook.name for hook in HOOKS if hook.firstresult}
    assert marked == {"opus_load_tasks", "opus_task_restore"}


@pytest.mark.parametrize("hook", HOOKS, ids=[hook.name for hook in HOOKS])
def test_hook_is_documented(hook: docs.Hook) -> None:
    assert len(hook.doc.splitlines()) >= 3, f"{hook.name}: the docstring needs 3+ lines"
    signature = inspect.signature(hook.function)
    assert signature.return_annotation is not inspect.Signature.empty, (
        f"{hook.name}: no return annotation"
    )
    if not is_lifecycle_notification(hook):
        assert "Example" in hook.doc, f"{hook.name}: the docstring needs an Example"


def test_code_blocks_become_fenced_python() -> None:
    doc = "Say hello.\n\nExample::\n\n    @hookimpl\n    def f():\n        return 1\n\nAfter."
    assert docs.markdown(doc) == (
        "Say hello.\n\nExample:\n\n```python\n@hookimpl\ndef f():\n    return 1\n```\n\nAfter."
    )


def test_signatures_are_the_source_text() -> None:
    restore = next(hook for hook in HOOKS if hook.name == "opus_task_restore")
    assert restore.signature.startswith("def opus_task_restore(\n    task: Task,")
    assert restore.signature.endswith(") -> Mapping[str, Any] | None")
