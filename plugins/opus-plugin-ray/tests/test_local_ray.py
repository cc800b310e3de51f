"""Without an address the runner starts a Ray of its own and stops it on shutdown.

This module does not use the session's cluster, so it runs before it starts (see
conftest.py): one Ray at a time on the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import alive
from opus_plugin_ray import RayRunner

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # starts a Ray; one worker for all

PATIENCE = 120.0


def gone(pid: int) -> bool:
    """Wait (up to `PATIENCE`) for process `pid` to end; whether it did."""
    deadline = time.monotonic() + PATIENCE
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def short_folder() -> Iterator[Path]:
    """A folder for a local Ray's files, with a short path (Ray's sockets live there, and a
    socket's path has at most 107 bytes), removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="opus-ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def processes_of(folder: Path, program: str) -> list[int]:
    """The ids of the processes running `program` with `folder` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command[0].endswith(program.encode()) and str(folder).encode() in b" ".join(command):
            found.append(int(entry.name))
    return found


def test_a_local_ray_with_num_cpus_is_started_and_stopped_by_the_runner(
    monkeypatch: pytest.MonkeyPatch, short_folder: Path
) -> None:
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written to ~/.ray
    folder = short_folder
    runner = RayRunner(num_cpus=1, init_kwargs={"_temp_dir": str(folder)})
    try:
        runner.start()
        assert runner.cluster_cpus == 1 and runner.max_concurrency == 1
        [raylet] = processes_of(folder, "raylet")
        pid = runner.submit(os.getpid).get_result(timeout=PATIENCE)
        assert pid != os.getpid() and alive(pid)
    finally:
        runner.shutdown()
    assert not ray.is_initialized()
    assert gone(pid), f"the local Ray's worker {pid} outlived shutdown()"
    assert gone(raylet), f"the local Ray's raylet {raylet} outlived shutdown()"


def test_an_unreachable_address_is_one_clear_error(tmp_path: Path) -> None:
    from cli_helpers import opus
    from opus_plugin_ray import RayConnectionError

    with pytest.raises(
        RayConnectionError, match="cannot connect to the Ray cluster at 127.0.0.1:9"
    ):
        RayRunner(address="127.0.0.1:9").start()
    (tmp_path / "opus.toml").write_text(
        '[opus]\nrunner = "ray"\nprocessors = ["noop:Noop"]\n'
        '[runners.ray]\naddress = "127.0.0.1:9"\n'
        '[[tasks]]\nkind = "Noop"\nversion = "v1"\n'
    )
    (tmp_path / "noop.py").write_text(
        "from opus_core import TaskProcessor\nclass Noop(TaskProcessor):\n    kind = 'Noop'\n"
        "    def process_task(self, task, command, context, key_value_store, state_persistence):\n"
        "        pass\n"
    )
    result = opus("run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().startswith(
        "opus: error: cannot connect to the Ray cluster at 127.0.0.1:9"
    )
    assert "Traceback" not in result.stderr


def test_opus_run_runs_the_pipeline_example_on_a_local_ray(
    tmp_path: Path, short_folder: Path
) -> None:
    from cli_helpers import opus

    examples = Path(__file__).resolve().parents[3] / "examples"
    folder = short_folder
    result = opus(
        "run", "--config", str(examples / "pipeline" / "opus.toml"),
        "--runner", "ray", "--context", "dev",
        cwd=tmp_path,
        env={"RAY_TMPDIR": str(folder), "RAY_AUTH_MODE": "disabled"},
        timeout=PATIENCE,
        process=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 succeeded" in result.stdout
    # Logged by the Provision processor on a worker, written by opus:
    assert "web: web using db.internal:5432 and cache.internal:6379 (dev)" in result.stderr
    assert not processes_of(folder, "raylet"), "the local Ray outlived opus run"
