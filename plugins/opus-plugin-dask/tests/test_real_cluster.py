"""The dask runner against a real cluster: `dask scheduler` and `dask worker` started as
processes of their own, in a folder that is not the project, so nothing of the project is
on the worker's `sys.path` — what the worker needs of it, the runner has to send."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import opus

pytestmark = pytest.mark.slow  # a real dask cluster

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DASK = Path(sys.executable).parent / "dask"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a cluster process this module started, and whatever it started (its group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a scheduler with one worker (two threads) on loopback."""
    home = tmp_path_factory.mktemp("cluster")
    scheduler_file = home / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("OPUS_")}
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = (home / f"{args[0]}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [str(DASK), *args],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: the worker's nanny has a child
            )
        )

    try:
        start(
            "scheduler", "--host", "127.0.0.1", "--port", "0",
            "--scheduler-file", str(scheduler_file), "--no-dashboard",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert time.monotonic() < deadline, (home / "scheduler.log").read_text()
            time.sleep(0.05)
        start(
            "worker", "--scheduler-file", str(scheduler_file),
            "--nworkers", "1", "--nthreads", "2", "--no-dashboard",
        )  # fmt: skip
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(1, timeout=30)
            address = client.scheduler.address
            where = client.run(os.getcwd)
        assert list(where.values()) == [str(home)]
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)


def _project(tmp_path: Path, address: str) -> Path:
    """A copy of examples/pipeline whose `[runners.dask]` points at `address`."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "pipeline", project)
    config = project / "opus.toml"
    text = config.read_text()
    text = text.replace("n_workers = 2\nthreads_per_worker = 2\n", f'address = "{address}"\n')
    assert address in text
    config.write_text(text)
    return project


def test_opus_run_sends_the_project_processors_to_the_workers(
    scheduler_address: str, tmp_path: Path
) -> None:
    project = _project(tmp_path, scheduler_address)
    result = opus("run", "--runner", "dask", "--context", "dev", cwd=project, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    assert "6 succeeded" in result.stdout
    # Logged by the Provision processor on the worker, written by the driver:
    assert "web: web using db.internal:5432 and cache.internal:6379 (dev)" in result.stderr
    assert "database: database on net-42 (dev)" in result.stderr

    # The workers keep running; the next run brings the module as it is now.
    module = project / "pipeline_processors.py"
    module.write_text(module.read_text().replace("'provisioned'", "'set up'"))
    (project / "opus.toml").write_text(
        (project / "opus.toml")
        .read_text()
        .replace('spec = { message = "debug tools installed" }', "spec = {}")
    )
    again = opus("run", "debug-tools", "--runner", "dask", "--context", "dev", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "debug-tools: set up (dev)" in again.stderr


def test_a_script_s_own_modules_reach_the_workers(scheduler_address: str, tmp_path: Path) -> None:
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
            import sys

            from opus_plugin_dask import DaskRunner
            from shapes import Square

            from opus_core import task

            runner = DaskRunner(address={scheduler_address!r})


            @task(runner=runner)
            def grow(square: Square) -> Square:
                return Square(square.side * 2)


            @task(runner=runner)
            def measure(square: Square) -> tuple[float, int]:
                return square.area(), os.getpid()


            if __name__ == "__main__":
                bigger = grow(Square(1.5)).get_result(timeout=30)
                area, pid = measure(bigger).get_result(timeout=30)
                runner.shutdown()
                print(type(bigger).__module__, bigger, area, pid != os.getpid())
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=script,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shapes", "Square(side=3.0)", "9.0", "True"]
    assert "measuring a square of side 3.0" in result.stderr  # the worker's warning


def test_installed_distributions_are_never_shipped() -> None:
    from opus_plugin_dask.modules import user_modules

    shipped = {m.name: m for m in user_modules()}
    assert "cli_helpers" in shipped  # tests/, on sys.path through pytest's `pythonpath`
    assert list(shipped["cli_helpers"].files) == ["cli_helpers.py"]
    # opus-core and the plugins are installed in editable mode, from this very checkout:
    assert not shipped.keys() & {"opus_core", "opus_plugin_dask", "distributed", "pytest", "json"}
