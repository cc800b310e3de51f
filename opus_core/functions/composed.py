"""`ComposedRun`: the run of a function-task call that starts later — once its inputs
ended, its resources were free, or its cached result was looked up — and then follows the
run of the work itself."""

from __future__ import annotations

from typing import Any

from opus_core.runners import BaseTaskRun


class ComposedRun(BaseTaskRun):
    """The run of a call whose inputs had not ended, on a runner that cannot `prepare` runs.

    Once the inputs end, the work is submitted and this run follows the run
    `submit` returned (`inner`).
    """

    __slots__ = ("inner",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inner: BaseTaskRun | None = None
        """The run of the work itself, once started."""

    def _adopt(self, inner: BaseTaskRun) -> None:
        self.inner = inner
        if self.done():  # stopped while the work was being started
            inner.stop()
        else:
            inner.add_done_callback(self._follow)

    def _follow(self, inner: BaseTaskRun) -> None:
        self.attempts = inner.attempts
        status, value, exception = inner.outcome()
        self.finish(value=value, exception=exception, status=status)

    def halt(self) -> None:
        """Stop the work's own run."""
        if self.inner is not None:
            self.inner.stop()

    def get_result(self, timeout: float | None = None, raise_exceptions: bool = True) -> Any:
        """The work's value (fetched from the work's own run, which may hold it remotely)."""
        if not self.wait(timeout):
            raise TimeoutError(f"task run {self.instance_name} did not finish within {timeout}s")
        inner = self.inner
        if self.exception() is None and inner is not None:
            return inner.get_result(0, raise_exceptions)
        return super().get_result(0, raise_exceptions)
