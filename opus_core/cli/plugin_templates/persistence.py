"""The `persistence` kind: a persistence whose tests subclass `PersistenceContract`."""

from __future__ import annotations

from opus_core.cli.plugin_templates.common import API, TESTS_README

PACKAGE = (
    '''\
"""The opus plugin `$name`: the persistence `$name`, to edit into your own.

`${camel}Persistence` keeps every state in one JSON file, read on each access and
rewritten whole, under a file lock, on each change: simple and safe, and slow
for big projects. Keep it elsewhere by rewriting the
four state methods; its tests — opus-core's `PersistenceContract` — say
whether it keeps the contract.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from opus_core import StatePersistence
from opus_core.persistence import state_folder, to_json
from opus_core.plugin import hookimpl

'''
    + API
    + '''

class ${camel}Persistence(StatePersistence):
    """The persistence `$name`: `[opus] persistence = "$name"` in opus.toml chooses it.

    `path` (from `[persistence.$name]`) is the JSON file; by default
    `$snake.json` in the project's own state folder.
    """

    name: ClassVar[str] = "$name"

    supports_concurrent_processes: ClassVar[bool] = True  # every change holds a file lock

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else state_folder() / "$snake.json"

    def read(self) -> dict[str, Any]:
        """Every identifier and its state, as the file holds them now."""
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The file's contents to change, under a lock that other processes respect; the
        file is written whole (a temporary file, then a rename) when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(json.dumps(data))
            os.replace(temporary, self.path)

    def retrieve_all_state_from_persistence(self) -> dict[str, dict[str, Any]]:
        """Every identifier and its state."""
        return self.read()

    def get_object_state(self, object_identifier: str) -> dict[str, Any]:
        """The state of `object_identifier`, or an empty dict (a fresh copy either way)."""
        return self.read().get(object_identifier, {})  # type: ignore[no-any-return]

    def save_object_state(self, object_identifier: str, data: dict[str, Any]) -> None:
        """Replace the state of `object_identifier` with `data`.

        `to_json` refuses (naming the identifier) what JSON would not give back as it is.
        """
        value = json.loads(to_json(object_identifier, data))
        with self.changing() as stored:
            stored[object_identifier] = value

    def delete_object_state(self, object_identifier: str) -> bool:
        """Forget `object_identifier`; True if it had state."""
        with self.changing() as stored:
            return stored.pop(object_identifier, None) is not None


@hookimpl
def opus_register_persistence() -> Iterable[type[StatePersistence]]:
    """The persistence classes of this plugin."""
    return [${camel}Persistence]
'''
)

TESTS = '''\
"""The `$name` persistence keeps opus's persistence contract and keeps what it is given."""

from __future__ import annotations

from pathlib import Path

from opus_core.testing import OpusProject, PersistenceContract

import $module
from $module import ${camel}Persistence


class Test${camel}Persistence(PersistenceContract):
    """opus-core's conformance tests of persistence, run against this one."""

    def make_persistence(self, tmp_path: Path) -> ${camel}Persistence:
        return ${camel}Persistence(path=tmp_path / "state.json")


def test_state_outlives_the_object_that_saved_it(tmp_path: Path) -> None:
    ${camel}Persistence(path=tmp_path / "state.json").save_object_state("a", {"n": 1})
    assert ${camel}Persistence(path=tmp_path / "state.json").get_object_state("a") == {"n": 1}


def test_opus_state_reads_the_file_opus_toml_names(opus_project: OpusProject) -> None:
    opus_project.register($module, name="$name")
    opus_project.write_config(
        """
        [opus]
        persistence = "$name"

        [persistence.$name]
        path = "state.json"
        """
    )
    ${camel}Persistence(path=opus_project.path / "state.json").save_object_state("a", {"n": 1})
    result = opus_project.run("state", "show", "a", "--json")
    assert result.returncode == 0, result.stderr
    result.stdout.fnmatch_lines(['*"n": 1*'])
'''

README = """\
# $distribution

An opus (`opus-core`) plugin providing the persistence
`$name`: every state in one JSON file.

```sh
pip install -e .
opus plugins list        # lists `$name`, providing the persistence $name
```

```toml
[opus]
persistence = "$name"

[persistence.$name]
path = ".opus/state.json"   # default: $snake.json in the project's state folder
```
""" + TESTS_README.replace(
    "$contract", ", and the persistence contract's tests (`PersistenceContract`)"
)

# -- loader ---------------------------------------------------------------------------------
