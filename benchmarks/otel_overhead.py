"""What tracing with the otel plugin adds to a run, per task.

    .venv/bin/python benchmarks/otel_overhead.py [--tasks 10000] [--rounds 7]

Two rows, each a run on `sequential` in this process, tracing off and on in turns
(one of each per round, interleaved):

* 10,000 no-op tasks (`--tasks`): what opus's own bookkeeping of a task costs, and the
  two spans and the attempt context tracing adds to it;
* 200 tasks of 1 ms each (`time.sleep(0.001)`): a task that does something.

"Off" is opus with the plugin installed and not enabled (its tracing hooks are not
registered: a run pays nothing for it). "On" is the plugin's `Tracing` with what a user
gets: the SDK's `BatchSpanProcessor` and the OTLP/HTTP exporter, sending to a null
collector — a process of its own on loopback that answers every export with 200.
The table gives the median seconds per task of each, and the median of the per-round
ratios (targets: 1.15 or less for no-op tasks, 1.02 or less for 1 ms tasks).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks

NULL_COLLECTOR = """
import http.server, sys

class Null(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Null)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Work(TaskProcessor):
    kind = "Work"

    def process_task(
        self, task: Task, command: str, context: str, key_value_store: Any, state_persistence: Any
    ) -> dict[str, Any]:
        if task.spec["seconds"]:
            time.sleep(task.spec["seconds"])
        return {}


def one_run(count: int, seconds: float, plugins: list[Any]) -> float:
    """Seconds per task of one run of `count` tasks of `seconds` each."""
    tasks = Tasks(plugins=plugins, logger=LoggerWrapper("CRITICAL"))
    tasks.register_task_processor(Work())
    for i in range(count):
        tasks.add_task(Task("Work", "v1", {"seconds": seconds}, {"name": f"t{i}"}))
    start = time.perf_counter()
    report = tasks.process_context()
    spent = time.perf_counter() - start
    assert report.ok, report.summary()
    return spent / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    collector = subprocess.Popen(
        [sys.executable, "-c", NULL_COLLECTOR], stdout=subprocess.PIPE, text=True
    )
    try:
        assert collector.stdout is not None
        port = int(collector.stdout.readline())
        from opus_plugin_otel import Options, settings
        from opus_plugin_otel.tracing import Tracing

        options = Options(enabled=True, endpoint=f"http://127.0.0.1:{port}")
        tracing = Tracing(settings(options, environ={}))
        print(f"{'row':<22} {'off µs/task':>12} {'on µs/task':>11} {'ratio':>6}  target")
        for label, count, seconds, target in (
            (f"{args.tasks:,} no-op tasks", args.tasks, 0.0, 1.15),
            ("200 tasks of 1 ms", 200, 0.001, 1.02),
        ):
            off: list[float] = []
            on: list[float] = []
            for _ in range(args.rounds):
                off.append(one_run(count, seconds, []))
                on.append(one_run(count, seconds, [tracing]))
            ratio = statistics.median(b / a for a, b in zip(off, on, strict=True))
            met = "yes" if ratio <= target else "NO"
            print(
                f"{label:<22} {statistics.median(off) * 1e6:>12.1f} "
                f"{statistics.median(on) * 1e6:>11.1f} {ratio:>6.2f}  ≤ {target} {met}"
            )
    finally:
        collector.terminate()
        collector.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
