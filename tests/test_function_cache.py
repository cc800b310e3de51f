"""`@task(cache=True)`: a function task's result reused for equal arguments and the same
source, kept in the configured persistence (a real SQLite file here)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import opus

from opus_core import task
from opus_core.errors import UpstreamFailedError
from opus_core.functions.caching import canonical
from opus_core.testing import reset_caches


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder, current, whose persistence is a SQLite file inside it."""
    (tmp_path / "opus.toml").write_text(
        '[opus]\nrunner = "threadpool"\npersistence = "sqlite"\n'
        '[persistence.sqlite]\npath = "state.db"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / ".state"))
    monkeypatch.delenv("OPUS_CONFIG", raising=False)
    reset_caches()
    yield tmp_path
    reset_caches()


calls: list[tuple[Any, ...]] = []


@task(cache=True, runner="sequential")
def total(prices: dict[str, float], extra: set[str], factor: int = 1) -> float:
    calls.append((prices, extra, factor))
    return sum(prices.values()) * factor + len(extra)


def test_an_equal_call_is_restored_with_the_value_and_another_runs(project: Path) -> None:
    calls.clear()
    first = total({"tea": 3.5, "cake": 6.0}, {"a", "b"})
    assert first.get_result() == 11.5 and first.status.value == "succeeded"
    # Equal arguments, in another order: the same key.
    again = total({"cake": 6.0, "tea": 3.5}, {"b", "a"})
    assert again.get_result() == 11.5 and again.status.value == "restored"
    assert len(calls) == 1
    other = total({"tea": 3.5}, set(), factor=2)
    assert other.get_result() == 7.0 and other.status.value == "succeeded"
    assert len(calls) == 2
    assert (project / "state.db").exists()


@pytest.mark.slow  # two Python processes
def test_equal_arguments_hash_alike_in_processes_with_other_hash_seeds(project: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from opus_core import task

        @task(cache=True, runner="sequential")
        def joined(words):
            print("computed", flush=True)
            return "-".join(sorted(words))

        run = joined({"kiwi", "apple", "fig", "date", "plum", "pear", "lime"})
        print(run.status.value, run.get_result())
        """
    )
    (project / "words.py").write_text(script)
    seen = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "words.py"], cwd=project, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout.split())
    assert seen[0] == ["computed", "succeeded", "apple-date-fig-kiwi-lime-pear-plum"]
    assert seen[1] == ["restored", "apple-date-fig-kiwi-lime-pear-plum"]


def test_an_argument_the_cache_cannot_hash_fails_the_run_naming_it(project: Path) -> None:
    @task(cache=True, runner="sequential")
    def size(thing: object) -> int:
        return 1

    run = size(threading.Lock())
    with pytest.raises(TypeError) as raised:
        run.get_result()
    assert str(raised.value).startswith(
        "task 'size' (cache=True): argument 0 is a _thread.lock, which the cache cannot hash "
        "by value; pass cache_key_fn=... to @task to key its calls yourself"
    )

    @task(cache=True, runner="sequential", cache_key_fn=lambda args, kwargs: "the-lock")
    def keyed(thing: object) -> int:
        calls.append(("keyed",))
        return 2

    calls.clear()
    assert keyed(threading.Lock()).get_result() == 2
    assert keyed(threading.Lock()).status.value == "restored"
    assert calls == [("keyed",)]


def test_cache_expiration_ages_results_out(project: Path) -> None:
    calls.clear()

    @task(cache=True, runner="sequential", cache_expiration=1e-9)
    def fleeting(x: int) -> int:
        calls.append((x,))
        return x

    @task(cache=True, runner="sequential", cache_expiration=3600)
    def lasting(x: int) -> int:
        calls.append((x,))
        return x

    for _ in range(2):
        fleeting(1).get_result()
        lasting(2).get_result()
    assert calls == [(1,), (2,), (1,)]


def test_editing_the_function_s_source_is_a_new_key(project: Path) -> None:
    module = project / "steps.py"
    sys.path.insert(0, str(project))
    try:
        results = []
        for body in ("return x + 1", "return x + 1", "return x + 100"):
            module.write_text(
                "from opus_core import task\n\n"
                '@task(cache=True, runner="sequential")\n'
                f"def step(x):\n    {body}\n"
            )
            sys.modules.pop("steps", None)
            importlib.invalidate_caches()
            steps = importlib.import_module("steps")
            run = steps.step(1)
            results.append((run.status.value, run.get_result()))
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("steps", None)
    assert results == [("succeeded", 2), ("restored", 2), ("succeeded", 101)]


def test_runs_as_inputs_are_hashed_by_their_results(project: Path) -> None:
    @task(runner="threadpool")
    def source(n: int) -> list[int]:
        return list(range(n))

    @task(runner="threadpool")
    def broken() -> int:
        raise ValueError("no data")

    @task(cache=True, runner="threadpool")
    def summed(values: list[int]) -> int:
        calls.append(("summed",))
        return sum(values)

    calls.clear()
    assert summed(source(4)).get_result() == 6
    second = summed(source(4))
    assert second.get_result() == 6 and second.status.value == "restored"
    assert summed(source(5)).get_result() == 10
    assert calls == [("summed",), ("summed",)]
    failed = summed(broken())
    with pytest.raises(UpstreamFailedError):
        failed.get_result()


def test_a_result_opus_cannot_store_is_not_cached_and_says_so(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @task(cache=True, runner="sequential")
    def thing(x: int) -> object:
        calls.append(("thing",))
        return object()

    calls.clear()
    thing(1).get_result()
    assert thing(1).status.value == "succeeded"
    assert calls == [("thing",), ("thing",)]
    assert "task 'thing': its result is not cached: opus cannot store" in caplog.text


def test_calls_at_once_on_threads_all_get_the_value_and_leave_one_whole_entry(
    project: Path,
) -> None:
    @task(cache=True, runner="threadpool")
    def square(x: int) -> int:
        return x * x

    runs = [square(7) for _ in range(16)]
    assert [run.get_result() for run in runs] == [49] * 16
    listed = opus("cache", "list", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    entries = [e for e in json.loads(listed.stdout) if e["task"] == "square"]
    assert len(entries) == 1 and entries[0]["command"] == "-"
    assert square(7).status.value == "restored"
    cleared = opus("cache", "clear", "square", cwd=project)
    assert cleared.stderr == "forgot 1 cached fingerprint(s) of square\n"
    reset_caches()
    again = square(7)
    assert again.get_result() == 49 and again.status.value == "succeeded"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cache": "yes"}, "@task cache must be True or False, got 'yes' (task 'f')"),
        ({"cache_expiration": 5}, "@task cache_expiration and cache_key_fn need cache=True"),
        (
            {"cache": True, "cache_expiration": -1},
            "@task cache_expiration must be a positive number of seconds, got -1 (task 'f')",
        ),
        (
            {"cache": True, "cache_expiration": float("inf")},
            "@task cache_expiration must be a positive number of seconds, got inf (task 'f')",
        ),
        ({"cache": True, "cache_key_fn": "key"}, "@task cache_key_fn must be callable"),
    ],
)
def test_cache_options_are_checked_when_the_task_is_made(
    options: dict[str, Any], message: str
) -> None:
    def f() -> None:
        return None

    with pytest.raises(ValueError) as raised:
        task(**options)(f)
    assert str(raised.value).startswith(message)


def test_canonical_values_are_equal_for_equal_values_and_name_what_they_cannot_hash() -> None:
    assert canonical({2: "b", 1: "a"}, "x") == canonical({1: "a", 2: "b"}, "x")
    assert canonical((1, 2), "x") != canonical([1, 2], "x")
    assert canonical(b"\x00", "x") != canonical(bytearray(b"\x00"), "x")
    assert canonical(float("nan"), "x") == {"float": "nan"}
    with pytest.raises(TypeError, match=r"argument 0\[1\]\['k'\] is a builtins.object"):
        canonical([1, {"k": object()}], "argument 0")


def test_what_the_source_cannot_show_is_in_the_key_too(project: Path) -> None:
    inc, dbl = task(cache=True, runner="sequential")(lambda x: x + 1), task(cache=True, runner="sequential")(lambda x: x * 2)  # fmt: skip
    assert (inc(10).get_result(), dbl(10).get_result()) == (11, 20)  # one line, two lambdas

    def make(k: int) -> Any:
        @task(cache=True, runner="sequential")
        def mul(x: int) -> int:
            return x * k

        return mul

    assert (make(2)(5).get_result(), make(3)(5).get_result()) == (10, 15)  # closures
    results = []
    for name in ("sin", "cos"):  # no source to read (code made from a string): its names
        namespace: dict[str, Any] = {}
        exec(
            compile(
                "import math\nfrom opus_core import task\n"
                f'@task(cache=True, runner="sequential")\ndef f(x):\n    return math.{name}(x)\n',
                "<string>",
                "exec",
            ),
            namespace,
        )
        results.append(namespace["f"](0.0).get_result())
    assert results == [0.0, 1.0]


def test_the_source_is_read_when_the_task_is_made_not_when_first_called(project: Path) -> None:
    module = project / "edited.py"
    module.write_text(
        'from opus_core import task\n\n@task(cache=True, runner="sequential")\n'
        "def f(x):\n    return x + 1\n"
    )
    sys.path.insert(0, str(project))
    try:
        first = importlib.import_module("edited")
        module.write_text(module.read_text().replace("x + 1", "x * 100"))  # before the call
        assert first.f(10).get_result() == 11
        sys.modules.pop("edited")
        importlib.invalidate_caches()
        second = importlib.import_module("edited")
        run = second.f(10)
        assert (run.get_result(), run.status.value) == (1000, "succeeded")
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("edited", None)


def test_an_integer_too_long_for_json_is_hashed_all_the_same(project: Path) -> None:
    @task(cache=True, runner="sequential")
    def digits(n: int) -> int:
        return n.bit_length()

    huge = 7**10000
    assert digits(huge).get_result() == huge.bit_length()
    assert digits(huge).status.value == "restored"
