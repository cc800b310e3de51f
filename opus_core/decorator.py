"""The old home of `@task`; everything lives in `opus_core.function_task` now."""

from opus_core.function_task import TaskFunction, task

__all__ = ["TaskFunction", "task"]
