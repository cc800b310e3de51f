"""The `runner` kind: a runner whose tests subclass `RunnerContract`."""

from __future__ import annotations

from opus_core.cli.plugin_templates.common import API, TESTS_README

PACKAGE = (
    '''\
"""The opus plugin `$name`: the runner `$name`, to edit into your own.

`${camel}Runner` runs each task in the caller, one at a time, as opus's own
`sequential` runner does. Make it run tasks elsewhere by overriding `submit`
(opus-core's CONTRIBUTING.md, "Writing a runner"); its tests — opus-core's
`RunnerContract` — say whether it keeps the contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from opus_core.plugin import hookimpl
from opus_core.runners import Runner, SequentialRunner

'''
    + API
    + '''

class ${camel}Runner(SequentialRunner):
    """The runner `$name`: `[opus] runner = "$name"` in opus.toml chooses it."""

    name: ClassVar[str] = "$name"


@hookimpl
def opus_register_runners() -> Iterable[type[Runner]]:
    """The runners of this plugin."""
    return [${camel}Runner]
'''
)

TESTS = '''\
"""The `$name` runner keeps opus's runner contract and is found by opus."""

from __future__ import annotations

import json

from opus_core.testing import OpusProject, RunnerContract

import $module
from $module import ${camel}Runner


class Test${camel}Runner(RunnerContract):
    """opus-core's conformance tests of runners, run against this one."""

    runner_class = ${camel}Runner
    max_workers_option = None  # it runs one task at a time: there is no cap to check


def test_a_function_runs_on_it() -> None:
    run = ${camel}Runner().submit(pow, 2, 10)
    assert run.get_result(timeout=30) == 1024


def test_opus_lists_it_among_the_runners(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    result = opus_project.run("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    (plugin,) = [p for p in json.loads(result.stdout) if p["name"] == "$name"]
    assert plugin["provides"]["runners"] == ["$name"]
'''

README = """\
# $distribution

An opus (`opus-core`) plugin providing the runner
`$name`.

```sh
pip install -e .
opus plugins list        # lists `$name`, providing the runner $name
```

```toml
[opus]
runner = "$name"
```
""" + TESTS_README.replace("$contract", ", and the runner contract's tests (`RunnerContract`)")

# -- persistence ----------------------------------------------------------------------------
