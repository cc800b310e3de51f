"""Ten sleepy workers: ten calls of a task that sleeps one second finish in about one second.

python examples/sleepy_workers.py [--runner process|sequential|...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from opus_core import task


@task(retries=1, retry_sleep_time=0.1)
def sleepy_worker(number: int) -> str:
    """Sleep for a second, then say who did it."""
    time.sleep(1)
    return f"worker {number} slept in process {os.getpid()}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", default=None, help="runner to use (default: process)")
    args = parser.parse_args(argv)
    worker = sleepy_worker if args.runner is None else task(runner=args.runner)(sleepy_worker.fn)
    start = time.monotonic()
    runs = [worker(n) for n in range(10)]
    for run in runs:
        print(run.get_result())
    print(f"10 sleepy workers finished in {time.monotonic() - start:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
