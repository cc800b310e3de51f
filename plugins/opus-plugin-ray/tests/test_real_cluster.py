"""The ray runner against the session's cluster from other processes: `opus run`, a script,
and a node killed while it runs a task. The cluster's nodes run in a folder outside the
project, so what the workers need of a project, the runner has to send."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from cli_helpers import opus
from harness import alive, until
from opus_plugin_ray import RayRunner, RayTaskLostError

from opus_core import task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
]  # a real Ray cluster; one worker for all

cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PATIENCE = 120.0


def on_cluster(project: Path, address: str, extra: str = "") -> None:
    """Point `project`'s opus.toml at the cluster (`[runners.ray] address`)."""
    config = project / "opus.toml"
    config.write_text(f'{config.read_text()}\n[runners.ray]\naddress = "{address}"\n{extra}')


def test_opus_run_runs_the_pipeline_example_with_its_log_lines(
    ray_address: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "pipeline", project)
    on_cluster(project, ray_address)
    result = opus(
        "run", "--runner", "ray", "--context", "dev", cwd=project, timeout=PATIENCE, process=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    assert "6 succeeded" in result.stdout
    # Logged by the Provision processor on a worker, written by the driver:
    assert "web: web using db.internal:5432 and cache.internal:6379 (dev)" in result.stderr
    assert "database: database on net-42 (dev)" in result.stderr


SLEEPER = """
import os
import time
from pathlib import Path

from opus_core import TaskProcessor


class Sleeper(TaskProcessor):
    kind = "Sleeper"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        Path(task.spec["pid"] + ".partial").write_text(str(os.getpid()))
        os.replace(task.spec["pid"] + ".partial", task.spec["pid"])
        time.sleep(60)
"""


def test_a_timed_out_task_is_killed_on_its_worker(ray_address: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleepers.py").write_text(SLEEPER)
    pid_file = tmp_path / "pid"
    (project / "opus.toml").write_text(
        textwrap.dedent(
            f"""
            [opus]
            runner = "ray"
            processors = ["sleepers:Sleeper"]

            [resources]
            second = 1

            [[tasks]]
            kind = "Sleeper"
            version = "v1"
            metadata = {{ name = "sleepy", timeout = 1, resources = {{ second = 1 }} }}
            spec = {{ pid = "{pid_file}" }}
            """
        )
    )
    on_cluster(project, ray_address)
    result = opus("run", cwd=project, timeout=PATIENCE, process=True)
    assert result.returncode != 0
    assert "timed out after 1s" in result.stdout + result.stderr, result.stdout + result.stderr
    pid = int(pid_file.read_text())  # written on the second node's worker, before the timeout
    assert until(lambda: not alive(pid), PATIENCE), f"the task's process {pid} still runs"


def test_a_script_s_own_modules_reach_the_workers(ray_address: str, tmp_path: Path) -> None:
    script = tmp_path / "app"
    script.mkdir()
    (script / "shapes.py").write_text(
        textwrap.dedent(
            """
            import logging
            from dataclasses import dataclass

            log = logging.getLogger("shapes")


            @dataclass
            class Square:
                side: float

                def area(self) -> float:
                    log.warning("measuring a square of side %s", self.side)
                    return self.side**2
            """
        )
    )
    (script / "main.py").write_text(
        textwrap.dedent(
            f"""
            import os

            import shapes
            from opus_plugin_ray import RayRunner
            from shapes import Square

            from opus_core import task

            runner = RayRunner(address={ray_address!r})


            @task(runner=runner)
            def grow(square: Square) -> Square:
                return Square(square.side * 2)


            @task(runner=runner)
            def measure(square: Square) -> tuple[float, str]:
                return square.area(), shapes.__file__


            if __name__ == "__main__":
                runner.start()  # shapes.py is sent to the cluster here
                os.remove("shapes.py")  # and from now on only there: Ray's copy
                bigger = grow(Square(1.5))
                area, where = measure(bigger).get_result(timeout=60)
                kind = type(bigger.get_result()).__module__
                runner.shutdown()
                print(kind, area, where != shapes.__file__)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=script,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert result.returncode == 0, result.stderr
    # The workers imported shapes from the copy Ray unpacked (the script's folder is on
    # their sys.path too, as Ray adds the driver's, but its shapes.py was gone):
    assert result.stdout.split() == ["shapes", "9.0", "True"], result.stdout + result.stderr
    assert "measuring a square of side 3.0" in result.stderr  # the worker's warning


def write_pid_and_wait(pid_file: str, release: str) -> int:
    """Write this process's id to `pid_file`, then wait for `release` to exist."""
    Path(pid_file + ".partial").write_text(str(os.getpid()))
    os.replace(pid_file + ".partial", pid_file)
    deadline = time.monotonic() + PATIENCE
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_a_node_killed_mid_run_fails_only_its_tasks(ray_cluster: Any, tmp_path: Path) -> None:
    ray_cluster.add_node("doomed")
    runner = RayRunner(address=ray_cluster.address)
    release = str(tmp_path / "release")
    try:

        @task(runner=runner, resources={"doomed": 1})
        def on_the_doomed_node(pid_file: str) -> int:
            return write_pid_and_wait(pid_file, release)

        @task(runner=runner)
        def elsewhere(pid_file: str) -> int:
            return write_pid_and_wait(pid_file, release)

        (tmp_path / "opus.toml").write_text("[resources]\ndoomed = 1\n")
        cwd = os.getcwd()
        os.chdir(tmp_path)
        from opus_core.testing import reset_caches

        reset_caches()
        try:
            doomed = on_the_doomed_node(str(tmp_path / "doomed"))
            spared = elsewhere(str(tmp_path / "spared"))
            assert until((tmp_path / "doomed").exists, PATIENCE)
            assert until((tmp_path / "spared").exists, PATIENCE)
            ray_cluster.kill("doomed")
            assert doomed.wait(PATIENCE), "the run of the killed node's task never ended"
            assert doomed.status == "failed"
            assert isinstance(doomed.exception(), RayTaskLostError), doomed.exception()
            assert spared.is_running()
            Path(release).touch()
            assert spared.get_result(timeout=PATIENCE) == int((tmp_path / "spared").read_text())
        finally:
            os.chdir(cwd)
            reset_caches()
    finally:
        Path(release).touch()
        runner.shutdown(wait=False)
