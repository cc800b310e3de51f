"""The file cache, measured: a seeded suite of 200 edits to a generated 40-task project of
shell steps over files, each followed by a run, asserting that exactly the tasks that must
run again do — 0 wrong hits (a task restored that had to run) and 0 needless runs.

Which tasks must run is worked out here from the project's own graph, not asked of opus:
an edited source file runs the tasks that read it and everything after them; a touched
one (new times, same bytes) runs nothing; a deleted output runs only the task that makes
it (it makes the same bytes again); an edited command runs that task and everything after
it; a changed parameter runs the tasks whose command uses it and everything after them; a
new task runs alone. The project also has cached function tasks (`@task(cache=True)`),
called after each run: an edit to one's source runs that one again, and only it.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from opus_core import Tasks

SEED = 20261207
TASKS = 40
EDITS = 200
SOURCES = 8
PARAMETERS = 4
FUNCTIONS = 3


class Project:
    """The generated project, and what must run after each edit."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.deps: dict[str, list[str]] = {}
        self.sources: dict[str, list[str]] = {}  # task -> the source files it reads
        self.salt: dict[str, int] = {}
        self.parameter: dict[str, str | None] = {}
        self.values = {f"p{k}": f"value-{k}-0" for k in range(PARAMETERS)}
        (root / "src").mkdir()
        for s in range(SOURCES):
            (root / "src" / f"s{s}.txt").write_text(f"source {s}\n")
        for _ in range(TASKS):
            self.add_task()
        self.versions = [0] * FUNCTIONS  # of each cached function's source

    def write_functions(self) -> None:
        """`steps.py`: the cached functions, each returning its version (its source grows
        with it, so no two versions are the same size)."""
        lines = ["from opus_core import task\n"]
        for f, version in enumerate(self.versions):
            lines.append(
                f'\n\n@task(cache=True, runner="sequential")\ndef f{f}(x):\n'
                f'    return x + len("{"v" * version}")\n'
            )
        (self.root / "steps.py").write_text("".join(lines))

    def call_functions(self) -> dict[str, str]:
        """Call each cached function (a module read anew); each call's status, by name."""
        import importlib
        import sys

        self.write_functions()
        sys.modules.pop("steps", None)
        importlib.invalidate_caches()
        sys.path.insert(0, str(self.root))
        try:
            steps = importlib.import_module("steps")
        finally:
            sys.path.remove(str(self.root))
        found = {}
        for f in range(FUNCTIONS):
            run = getattr(steps, f"f{f}")(1)
            assert run.get_result() == 1 + self.versions[f]
            found[f"fn:f{f}"] = run.status.value
        return found

    def add_task(self) -> str:
        name = f"t{len(self.deps)}"
        earlier = list(self.deps)
        self.deps[name] = sorted(
            self.rng.sample(earlier, min(len(earlier), self.rng.randint(0, 3)))
        )
        self.sources[name] = sorted(
            f"src/s{s}.txt" for s in self.rng.sample(range(SOURCES), self.rng.randint(1, 2))
        )
        self.salt[name] = 0
        self.parameter[name] = (
            f"p{self.rng.randrange(PARAMETERS)}" if self.rng.random() < 0.3 else None
        )
        return name

    def write(self) -> None:
        lines = [
            '[opus]\nrunner = "sequential"\npersistence = "sqlite"\n',
            f'[persistence.sqlite]\npath = "{self.root / "state.db"}"\n',
        ]
        for name, deps in self.deps.items():
            inputs = self.sources[name] + [f"build/{d}.txt" for d in deps]
            echo = f"{name} {self.salt[name]}"
            if self.parameter[name]:
                echo += f" ${{{self.parameter[name]}}}"
            run = f"mkdir -p build && cat {' '.join(inputs)} > build/{name}.txt && echo {echo} >> build/{name}.txt"
            lines.append(
                f'[[tasks]]\nkind = "Command"\nversion = "v1"\n'
                f'metadata = {{ name = "{name}", dependencies = {deps!r}, '
                f'inputs = {inputs!r}, outputs = ["build/{name}.txt"] }}\n'
                f"spec = {{ run = {run!r} }}\n".replace("'", '"')
            )
        (self.root / "opus.toml").write_text("".join(lines))

    def downstream(self, names: set[str]) -> set[str]:
        """`names` and every task after them."""
        found = set(names)
        for name, deps in self.deps.items():  # in order: dependencies come first
            if found.intersection(deps):
                found.add(name)
        return found

    def edit(self) -> tuple[str, set[str]]:
        """Make one edit; what it was, and the tasks that must run after it."""
        kind = self.rng.choice(
            ["content", "content", "touch", "delete", "command", "parameter", "add", "function"]
        )
        if kind == "function":
            f = self.rng.randrange(FUNCTIONS)
            self.versions[f] += 1
            return kind, {f"fn:f{f}"}
        if kind in ("content", "touch"):
            source = f"src/s{self.rng.randrange(SOURCES)}.txt"
            path = self.root / source
            if kind == "touch":
                os.utime(path, (self.rng.randint(1, 10**9),) * 2)
                return kind, set()
            path.write_text(path.read_text() + f"edit {self.rng.random()}\n")
            return kind, self.downstream({t for t, s in self.sources.items() if source in s})
        if kind == "delete":
            name = self.rng.choice(list(self.deps))
            (self.root / "build" / f"{name}.txt").unlink()
            return kind, {name}
        if kind == "command":
            name = self.rng.choice(list(self.deps))
            self.salt[name] += 1
            return kind, self.downstream({name})
        if kind == "parameter":
            key = f"p{self.rng.randrange(PARAMETERS)}"
            self.values[key] = f"{key}-{self.rng.random()}"
            return kind, self.downstream({t for t, p in self.parameter.items() if p == key})
        return kind, {self.add_task()}

    def run(self) -> dict[str, str]:
        self.write()
        tasks = Tasks.from_config(self.root / "opus.toml")
        tasks.key_value_store.store.update(self.values)
        report = tasks.process_context()
        found = {task_id: result.status.value for task_id, result in report.results.items()}
        return {**found, **self.call_functions()}


@pytest.mark.slow
def test_200_seeded_edits_run_exactly_what_must_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opus_core.testing import reset_caches

    monkeypatch.chdir(tmp_path)
    reset_caches()  # the cached functions' results go to this project's persistence
    project = Project(tmp_path, random.Random(SEED))
    first = project.run()
    assert set(first.values()) == {"succeeded"} and len(first) == TASKS + FUNCTIONS
    wrong_hits: list[tuple[int, str, str]] = []
    needless: list[tuple[int, str, str]] = []
    kinds: Counter[str] = Counter()
    for number in range(EDITS):
        kind, expected = project.edit()
        kinds[kind] += 1
        statuses = project.run()
        assert set(statuses.values()) <= {"succeeded", "restored"}, (number, kind, statuses)
        ran = {name for name, status in statuses.items() if status == "succeeded"}
        wrong_hits += [(number, kind, name) for name in sorted(expected - ran)]
        needless += [(number, kind, name) for name in sorted(ran - expected)]
    assert (wrong_hits, needless) == ([], [])
    assert sum(kinds.values()) == EDITS and len(kinds) == 7  # every kind of edit was made
    reset_caches()
