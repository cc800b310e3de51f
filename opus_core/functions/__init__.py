"""Function tasks: `@task`, runs that feed runs, `map`, and waiting on many runs.

Calling a task function starts it on a runner and returns its run. A run passed
to another call (as an argument, or inside a list, tuple, set or dict) is
replaced by its result before the function runs; the dependent starts when its
inputs are done, without blocking the caller or holding a worker meanwhile.

- `decorator`: `@task` and `TaskFunction` (starting runs, retries, timeouts)
- `options`: `@task`'s options checked, each error naming the task
- `inputs`: finding the runs among a call's arguments and putting values in their place
- `mapping`: `TaskFunction.map`, `RunList` and `unmapped`
- `waiting`: `wait` (`ALL_COMPLETED`, `FIRST_COMPLETED`, `FIRST_EXCEPTION`) and `as_completed`

Import the public names from `opus_core` (or `opus_core.function_task`, their old home).
"""
