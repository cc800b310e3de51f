"""A cluster with no worker: the tasks wait for one, and opus says so once on stderr."""

from __future__ import annotations

import time

import pytest
from distributed import LocalCluster
from opus_plugin_dask import DaskRunner

pytestmark = pytest.mark.slow  # a real dask cluster


def test_tasks_wait_for_a_worker_and_opus_says_the_cluster_has_none(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        runner = DaskRunner(address=cluster.scheduler_address, no_workers_warning=0.5)
        try:
            run = runner.submit(pow, 2, 8)
            said = ""
            deadline = time.monotonic() + 60
            while "opus: dask:" not in said and time.monotonic() < deadline:
                run.wait(0.1)
                said += capfd.readouterr().err
            assert not run.done()  # no worker: nothing could run it
            assert said.count("opus: dask: the scheduler at ") == 1, said
            assert "has had no worker for" in said and "1 task(s) wait for one to join" in said
            cluster.scale(1)  # a worker joins: the task runs
            assert run.get_result(timeout=60) == 256
        finally:
            runner.shutdown()


def test_no_workers_warning_must_be_positive() -> None:
    with pytest.raises(ValueError, match="no_workers_warning must be above 0"):
        DaskRunner(no_workers_warning=0)
