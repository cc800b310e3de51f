"""The threadpool runner keeps the runner contract, but for halting: a thread cannot be killed."""

from __future__ import annotations

from opus_plugin_threadpool import ThreadPoolRunner

from opus_core.testing import RunnerContract


class TestThreadPoolRunner(RunnerContract):
    runner_class = ThreadPoolRunner
    halts_work = False
