"""`opus_core.runners.remote`: work sent to another interpreter, and its outcome back."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opus_core.errors import OpusError, RemoteTaskError
from opus_core.results import format_traceback
from opus_core.runners import Work
from opus_core.runners.remote import (
    dumps_work,
    loads_work,
    portable_exception,
    read_outcome,
    run_work,
)

SCRIPT = """
import sys
from pathlib import Path

from opus_core.runners import Work
from opus_core.runners.remote import dumps_work


class Point:
    def __init__(self, x):
        self.x = x


def answer(offset):
    return Point(40).x + offset


Path(sys.argv[1]).write_bytes(dumps_work(Work(answer, (2,), {}, "answer")))
"""

RUN = """
import sys
from pathlib import Path

from opus_core.runners.remote import loads_work, read_outcome, run_work

work = loads_work(Path(sys.argv[1]).read_bytes())
print(read_outcome(run_work(work), work.name))
"""


def test_a_function_and_a_class_of_a_script_run_in_a_fresh_interpreter(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "run.py").write_text(RUN)
    sent = tmp_path / "work.bin"
    subprocess.run([sys.executable, "script.py", str(sent)], cwd=tmp_path, check=True)
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), str(sent)],
        cwd=tmp_path.parent,  # where the script's module cannot be imported from
        capture_output=True,
        text=True,
    )
    assert ran.stdout.strip() == "(True, 42)", ran.stderr


def fails() -> None:
    raise KeyError("missing")


def test_an_exception_travels_with_the_traceback_it_had_where_it_was_raised() -> None:
    ok, error = read_outcome(run_work(Work(fails, (), {}, "fails")), "fails")
    assert ok is False and isinstance(error, KeyError)
    assert "in fails" in format_traceback(error)


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.lock = threading.Lock()


def test_an_exception_that_cannot_be_pickled_becomes_a_remote_task_error() -> None:
    try:
        raise Unpicklable()
    except Unpicklable as exc:
        portable = portable_exception(exc)
    assert isinstance(portable, RemoteTaskError)
    assert "Unpicklable" in str(portable) and "cannot travel" in str(portable)
    again = pickle.loads(pickle.dumps(portable))
    assert "in test_an_exception_that_cannot_be_pickled" in format_traceback(again)


def test_bytes_that_are_not_an_outcome_read_as_an_error_naming_the_task() -> None:
    ok, error = read_outcome(b"not a pickle", "broken")
    assert ok is False and isinstance(error, OpusError) and "'broken'" in str(error)


def test_a_value_that_cannot_be_sent_back_fails_the_run_saying_so() -> None:
    ok, error = read_outcome(run_work(Work(threading.Lock, (), {}, "lock")), "lock")
    assert ok is False and isinstance(error, OpusError)
    assert "result of task 'lock' could not be sent back" in str(error)


def test_a_lock_among_the_arguments_cannot_be_sent() -> None:
    with pytest.raises(TypeError):
        dumps_work(Work(print, (threading.Lock(),), {}, "p"))


def test_a_closure_travels_by_value() -> None:
    base = 5

    def shifted(value: int) -> int:
        return base + value

    assert loads_work(dumps_work(Work(shifted, (1,), {}, "s")))() == 6
