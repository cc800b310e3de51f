"""The ray runner keeps the runner contract, halting included: `ray.cancel(force=True)`
kills the worker process running a task. Each test's runner connects to the session's
cluster and disconnects when shut down, which ends its job and so its workers."""

from __future__ import annotations

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
