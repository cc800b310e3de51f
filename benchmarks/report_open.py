"""How long the HTML report of a 10,000-task run takes to open in headless Chromium.

    .venv/bin/python benchmarks/report_open.py [--tasks 10000] [--repeat 5]

The run is made up (no engine involved): 10 layers of 1,000 tasks in three kinds, each
task depending on two of the layer before, one in a hundred retried and one in a thousand
failed, as the 10,000-task test of `tests/test_html_report.py`. Its report is written once
and opened `--repeat` times in fresh pages; the script prints the median of the time from
navigation to the report's `opus-report-ready` mark (everything drawn) and to the load
event, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from opus_core.html_report import write_report

CHROMIUM = "/usr/bin/chromium"


def made_up_run(count: int, width: int = 1000) -> dict[str, Any]:
    """A run record as `opus_core.history.find_run` returns it, for `count` tasks."""
    start = 1_800_000_000.0
    tasks: list[dict[str, Any]] = []
    for i in range(count):
        layer, k = divmod(i, width)
        deps = (
            []
            if layer == 0
            else sorted(
                {f"t{(layer - 1) * width + k}", f"t{(layer - 1) * width + (k * 7 + 3) % width}"}
            )
        )
        begin = start + layer * 0.5 + (k % 50) * 0.01
        log = [
            {"attempt": 1, "started_at": begin, "ended_at": begin + 0.008, "status": "succeeded"}
        ]
        status, error = "succeeded", None
        if i % 997 == 13:
            status, error = "failed", f"RuntimeError: t{i} broke"
            log[0].update(status="failed", error=error)
        elif i % 101 == 7:
            log = [
                {**log[0], "status": "failed", "error": "ConnectionError: lost"},
                {
                    "attempt": 2,
                    "started_at": begin + 0.01,
                    "ended_at": begin + 0.02,
                    "status": "succeeded",
                },
            ]
        tasks.append(
            {
                "name": f"t{i}",
                "kind": ("Extract", "Transform", "Load")[i % 3],
                "status": status,
                "attempts": len(log),
                "started_at": log[0]["started_at"],
                "ended_at": log[-1]["ended_at"],
                "duration": log[-1]["ended_at"] - log[0]["started_at"],
                "error": error,
                "traceback": None,
                "dependencies": deps,
                "attempt_log": log,
            }
        )
    return {
        "id": "bench",
        "command": "apply",
        "context": "default",
        "status": "failed",
        "started_at": start,
        "ended_at": start + (count // width) * 0.5 + 1,
        "tasks": tasks,
    }


def main() -> None:
    """Write the report, open it `--repeat` times, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        path = Path(folder) / "report.html"
        write_report(made_up_run(args.tasks), path)
        size = path.stat().st_size
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        ready: list[float] = []
        load: list[float] = []
        for _ in range(args.repeat):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready='1']")
            timing = page.evaluate(
                "() => ({load: performance.getEntriesByType('navigation')[0].loadEventEnd,"
                " ready: performance.getEntriesByName('opus-report-ready')[0].startTime})"
            )
            ready.append(timing["ready"])
            load.append(timing["load"])
            page.close()
        browser.close()
    print(
        f"{args.tasks:,} tasks, {size / 1e6:.1f} MB: "
        f"ready {statistics.median(ready):.0f} ms, load {statistics.median(load):.0f} ms "
        f"(medians of {args.repeat}; ready {min(ready):.0f}-{max(ready):.0f} ms)"
    )


if __name__ == "__main__":
    main()
