"""The dask runner keeps the runner contract, but for halting: Dask cannot stop a running task."""

from __future__ import annotations

import pytest
from opus_plugin_dask import DaskRunner

from opus_core.testing import RunnerContract

pytestmark = pytest.mark.slow  # a real dask cluster


class TestDaskRunner(RunnerContract):
    runner_class = DaskRunner
    runner_options = {"n_workers": 2, "threads_per_worker": 1, "processes": False}
    halts_work = False
    max_workers_option = "n_workers"
