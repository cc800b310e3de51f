"""The old home of `@task`; it lives in `opus_core.functions.decorator` now."""

from opus_core.functions.decorator import TaskFunction, task

__all__ = ["TaskFunction", "task"]
