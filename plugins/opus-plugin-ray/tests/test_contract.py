"""The ray runner keeps the runner contract, halting included: `ray.cancel(force=True)`
kills the worker process running a task. Each test's runner connects to the session's
cluster and disconnects when shut down, which ends its job and so its workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opus_plugin_ray import RayRunner

from opus_core.runners import Runner
from opus_core.testing import RunnerContract

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
]  # a real Ray cluster; one worker for all


class TestRayRunner(RunnerContract):
    runner_class = RayRunner
    halts_work = True
    max_workers_option = "max_workers"

    @pytest.fixture(autouse=True)
    def on_the_sessions_cluster(self, ray_address: str) -> Iterator[None]:
        """Every runner of these tests connects to the session's cluster, and is shut down
        after the test: the engine does not shut down a runner it is given, and a ray
        runner holds its share of the process's one connection to Ray until it is."""
        # Without starting a worker per CPU first: every runner here is a new Ray job, with
        # workers of its own, and what is checked does not depend on a warm start.
        self.runner_options = {"address": ray_address, "warm_up": False}
        self.made: list[Runner] = []
        yield
        for runner in self.made:
            runner.shutdown(wait=False)

    def make_runner(self, **options: Any) -> Runner:
        runner = super().make_runner(**options)
        self.made.append(runner)
        return runner


def test_shutdown_waits_for_a_call_to_ray_under_way_in_another_thread(ray_address: str) -> None:
    # A halt from the deadline watcher's thread may still be in `ray.wait` when the run's
    # runner shuts down: Ray ends the whole process if it is called after `ray.shutdown()`.
    import ray
    from harness import PATIENCE

    assert not ray.is_initialized()  # no other runner holds the connection
    runner = RayRunner(address=ray_address, warm_up=False)
    runner.start()
    seen: list[tuple[bool, bool, bool]] = []
    stopper = threading.Thread(target=runner.shutdown)

    def halting() -> None:
        with runner.calling_ray() as connected:
            stopper.start()
            # Long enough for an unguarded shutdown to end the connection; a guarded one
            # cannot end before this block does, however long it takes.
            stopper.join(5)
            seen.append((connected, stopper.is_alive(), bool(ray.cluster_resources())))

    caller = threading.Thread(target=halting)
    caller.start()
    caller.join(PATIENCE)
    stopper.join(PATIENCE)
    assert seen == [(True, True, True)]  # shutdown waited, and Ray still answered the call
    assert not ray.is_initialized()  # then the connection ended
    with runner.calling_ray() as connected:
        assert not connected  # a halt after shutdown leaves Ray alone
