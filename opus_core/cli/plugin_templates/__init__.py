"""The files `opus plugins new NAME --kind KIND` writes, one set of templates per kind.

Each is a `string.Template` over the names of `PluginNames` (`$name`,
`$module`, `$distribution`, `$camel`, `$kind`, `$snake`) and the kind's
`$summary`; a literal dollar is `$$`.
"""

from __future__ import annotations

from dataclasses import dataclass

from opus_core.cli.plugin_templates import command, loader, persistence, processor, runner
from opus_core.cli.plugin_templates.common import API, GITIGNORE, PYPROJECT, TESTS_README

__all__ = ["API", "GITIGNORE", "KINDS", "PYPROJECT", "TESTS_README", "Kind"]


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of plugin `opus plugins new` writes: its templates and what it says."""

    summary: str
    """What the plugin is, for `pyproject.toml`'s description and the next steps."""
    package: str
    tests: str
    readme: str


KINDS: dict[str, Kind] = {
    "processor": Kind(
        "an example processor with options and a lifecycle hook",
        processor.PACKAGE,
        processor.TESTS,
        processor.README,
    ),
    "runner": Kind("a runner", runner.PACKAGE, runner.TESTS, runner.README),
    "persistence": Kind(
        "a persistence", persistence.PACKAGE, persistence.TESTS, persistence.README
    ),
    "loader": Kind(
        "a task loader for .jsonl manifests", loader.PACKAGE, loader.TESTS, loader.README
    ),
    "command": Kind("an opus command", command.PACKAGE, command.TESTS, command.README),
}
"""The kinds, by the name `--kind` takes; the first is the default."""
