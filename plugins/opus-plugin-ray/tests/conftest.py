"""One real Ray cluster for the whole test session: `ray start --head` and a second node
(`ray start --address ...`), processes started here, in a folder outside the project, so
nothing of the project is on the workers' `sys.path` but what the runner sends.

Ray binds to the machine's own address, not to 127.0.0.1 (it replaces a loopback address
with the machine's): both nodes run on this machine. The second node declares the custom
resource `second` and sets `NODE_NAME=second` for its workers, so a test can place a task
there and see that it ran there. Tests that do not use the cluster run first, so that a
local Ray one of them starts never runs beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RAY = Path(sys.executable).parent / "ray"
PATIENCE = 120.0
"""Seconds a fixture waits for a node to start or join before it fails."""


def node_environment(**extra: str) -> dict[str, str]:
    """The environment of a node's processes (and so of its workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPUS_", "RAY_"))}
    env["RAY_AUTH_MODE"] = "disabled"  # a token in ~/.ray would otherwise turn it on
    env.update(extra)
    return env


@dataclass
class Cluster:
    """The session's Ray cluster: its address, and the node processes this conftest started."""

    address: str
    folder: Path
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def add_node(self, name: str, num_cpus: int = 1) -> subprocess.Popen[bytes]:
        """Start a node named `name` (its workers see `NODE_NAME`, and it declares one unit
        of the custom resource `name`), and wait until it has joined."""
        log = (self.folder / f"{name}.log").open("wb")
        node = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--block",
                f"--address={self.address}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps({name: 1})}",
                f"--temp-dir={self.folder / name}",
                "--disable-usage-stats",
            ],
            cwd=self.folder,
            env=node_environment(NODE_NAME=name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: its raylet and workers with it
        )
        self.nodes[name] = node
        self.wait_for(lambda resources: name in resources, f"node {name!r} to join")
        return node

    def wait_for(self, condition: object, what: str) -> None:
        """Wait until `condition(cluster resources)` holds (asked in a fresh process)."""
        script = (
            "import json, sys, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
            "print(json.dumps(ray.cluster_resources()))\n"
        )
        deadline = time.monotonic() + PATIENCE
        while True:
            asked = subprocess.run(
                [sys.executable, "-c", script],
                cwd=self.folder,
                env=node_environment(),
                capture_output=True,
                text=True,
                timeout=PATIENCE,
            )
            resources = json.loads(asked.stdout) if asked.returncode == 0 else {}
            if condition(resources):  # type: ignore[operator]
                return
            assert time.monotonic() < deadline, f"waited in vain for {what}: {asked.stderr}"
            time.sleep(0.5)

    def kill(self, name: str) -> None:
        """Kill node `name` and everything it started, at once (SIGKILL to its group)."""
        node = self.nodes.pop(name)
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(PATIENCE)


def stop(node: subprocess.Popen[bytes]) -> None:
    """End a node this conftest started, and whatever it started (its group): SIGTERM, then
    SIGKILL for what is left a few seconds later."""
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.wait(30)


def free_port() -> int:
    """A TCP port nothing listens on now (Ray's client server takes no 0 for "any")."""
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    """A head node (2 CPUs) and a second node (1 CPU, resource `second`) on this machine,
    without token authentication: the drivers the tests start (this process too) are told
    so through `RAY_AUTH_MODE`."""
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Short: Ray's socket paths live under it, and a socket path has at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="opus-ray-"))
    log = (folder / "head.log").open("wb")
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            "--port=0",
            "--num-cpus=2",
            f"--temp-dir={folder / 'ray'}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}",
        ],
        cwd=folder,
        env=node_environment(NODE_NAME="head"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster: Cluster | None = None
    try:
        current = folder / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + PATIENCE
        while not (current.exists() and current.read_text().strip()):
            assert head.poll() is None, (folder / "head.log").read_text()
            assert time.monotonic() < deadline, (folder / "head.log").read_text()
            time.sleep(0.1)
        cluster = Cluster(current.read_text().strip(), folder)
        cluster.add_node("second")
        yield cluster
    finally:
        for node in [*(cluster.nodes.values() if cluster else ()), head]:
            stop(node)
        shutil.rmtree(folder, ignore_errors=True)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


@pytest.fixture(scope="session")
def ray_address(ray_cluster: Cluster) -> str:
    """The address of the session's cluster (`host:port`)."""
    return ray_cluster.address


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """These tests first in the session, so that with pytest-xdist their worker (they are
    one `xdist_group`) starts on them while the others share the rest; among them, those
    that do not use the session's cluster first (a local Ray of their own then never runs
    beside it)."""
    here = Path(__file__).parent

    def order(item: pytest.Item) -> tuple[bool, bool]:
        return here not in item.path.parents, "ray_cluster" in getattr(item, "fixturenames", ())

    items.sort(key=order)
