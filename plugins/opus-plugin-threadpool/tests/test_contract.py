"""The threadpool runner keeps the runner contract, but for halting: a thread cannot be killed."""

from __future__ import annotations

from opus_core.testing import RunnerContract
from opus_plugin_threadpool import ThreadPoolRunner


class TestThreadPoolRunner(RunnerContract):
    runner_class = ThreadPoolRunner
    halts_work = False
