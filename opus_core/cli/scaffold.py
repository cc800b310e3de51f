"""`opus plugins new NAME [--kind KIND]`: write a complete plugin distribution that installs
and passes its tests.

The distribution is laid out like the project's own plugins
(`plugins/opus-plugin-colorlog`): a `pyproject.toml` with the `opus` entry
point, one package, a README showing the `opus.toml` section it reads, and its
tests, which use `opus_core.testing` (a runner's and a persistence's subclass
its conformance class). The kinds and their templates are in `plugin_templates`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from opus_core.errors import ConfigError

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext

NAME = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class PluginNames:
    """Every name the distribution of plugin `name` uses."""

    name: str
    """The entry-point name: what `opus plugins list` shows and `[plugins.<name>]` configures."""

    @property
    def distribution(self) -> str:
        """`opus-plugin-NAME`: the distribution, and the folder it is written to."""
        return f"opus-plugin-{self.name}"

    @property
    def snake(self) -> str:
        """The name with `-` turned into `_`, fit for modules."""
        return self.name.replace("-", "_")

    @property
    def module(self) -> str:
        """`opus_plugin_NAME`: the package."""
        return f"opus_plugin_{self.snake}"

    @property
    def camel(self) -> str:
        """The name in CamelCase, the start of the plugin's class names: `SlackNotify`."""
        return "".join(part.capitalize() for part in re.split(r"[-_]+", self.name) if part)

    @property
    def kind(self) -> str:
        """The example processor's kind (and class name): `<CamelName>Hello`."""
        return f"{self.camel}Hello"


def plugin_names(name: str) -> PluginNames:
    """The names of plugin `name`; `ConfigError` if `name` is not a valid plugin name."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a valid plugin name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter (e.g. 'hello' or 'slack-notify')"
        )
    if name == "builtin" or name.startswith("builtin."):
        raise ConfigError(f"{name!r} is the name of opus's own plugin; choose another")
    for prefix in ("opus-plugin-", "opus_plugin_"):
        if name.startswith(prefix):
            raise ConfigError(
                f"{name!r} would make a distribution called opus-plugin-{name}; "
                f"give the plugin's own name: {name.removeprefix(prefix)!r}"
            )
    return PluginNames(name)


DEFAULT_KIND = "processor"
"""What `opus plugins new` writes without `--kind`."""

NEXT = {
    "processor": "providing the processor {kind}",
    "runner": "providing the runner {name}",
    "persistence": "providing the persistence {name}",
    "loader": "with the hook opus_load_tasks",
    "command": "with the hook opus_register_commands; then: opus {name}",
}
"""What `opus plugins list` will show of each kind, for the next steps."""


def files(names: PluginNames, kind: str = DEFAULT_KIND) -> dict[str, str]:
    """The distribution's files for a plugin of `kind`: path (relative to its folder) to text."""
    from opus_core.cli.plugin_templates import GITIGNORE, KINDS, PYPROJECT

    templates = KINDS[kind]
    by_path = {
        "pyproject.toml": PYPROJECT,
        f"{names.module}/__init__.py": templates.package,
        f"tests/test_{names.snake}.py": templates.tests,
        "README.md": templates.readme,
        ".gitignore": GITIGNORE,
    }
    values = {
        "name": names.name,
        "distribution": names.distribution,
        "module": names.module,
        "snake": names.snake,
        "camel": names.camel,
        "kind": names.kind,
        "summary": templates.summary,
    }
    return {path: Template(text).substitute(values) for path, text in by_path.items()}


def add_command(plugins: Commands) -> None:
    """`opus plugins new`: its arguments, and `new` to handle it (`plugins`: the actions of
    `opus plugins`)."""
    parser = plugins.add(
        "new",
        new,
        help="write a new plugin distribution, with a passing test",
        configure=False,
    )
    parser.add_argument("name", help="the plugin's name: opus-plugin-NAME, module opus_plugin_NAME")
    parser.add_argument(
        "--kind",
        choices=("processor", "runner", "persistence", "loader", "command"),  # KINDS' keys
        default=DEFAULT_KIND,
        help="what the plugin provides, with a test of it (default: processor, with options "
        "and a lifecycle hook)",
    )
    parser.add_argument("--directory", default=".", help="where to write it (default: here)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing directory")


def new(context: CommandContext) -> int:
    """Write `DIR/opus-plugin-NAME/`; refuse to overwrite it without --force."""
    args = context.args
    names = plugin_names(args.name)
    kind = getattr(args, "kind", DEFAULT_KIND)
    target = Path(args.directory) / names.distribution
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    written = []
    for relative, text in files(names, kind).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    print(f"wrote the {kind} plugin {names.name!r} in {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print("next steps:")
    print(f"  cd {target}")
    print("  pip install -e '.[test]'")
    shows = NEXT[kind].format(name=names.name, kind=names.kind)
    print(f"  opus plugins list    # shows {names.name!r}, {shows}")
    print("  pytest")
    return 0
