"""What every kind of plugin `opus plugins new` writes shares: `pyproject.toml`, `.gitignore`,
the plugin API declaration and the tests' part of the README."""

from __future__ import annotations

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "opus plugin '$name': $summary"
readme = "README.md"
requires-python = ">=3.11"
license = "MIT"
dependencies = ["opus-core"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.opus]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
"""


GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
.pytest_cache/
"""


API = """\
__version__ = "0.1.0"

OPUS_PLUGIN_API_REQUIRES = ">=1.0,<2"
\"""The versions of opus's plugin API this plugin was written for (a PEP 440 specifier).\"""
"""

TESTS_README = """
## Tests

```sh
pip install -e '.[test]'
pytest
```

The tests use opus-core's `opus_core.testing`, which pytest finds through
opus-core: the `opus_project` fixture (an opus project in a temporary folder,
run by an engine and by the `opus` command, both in the test's process)$contract.
"""

# -- runner ---------------------------------------------------------------------------------
