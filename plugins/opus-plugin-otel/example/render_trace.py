"""Run the traced shop and draw its trace as a trace viewer does: `python render_trace.py`.

The run exports its spans with the console exporter (`OTEL_TRACES_EXPORTER=console`:
OpenTelemetry's JSON, one object per span, on stderr — the worker processes' too). This
script reads them back, lays them out as a waterfall — one row per span under its parent,
a bar from its start to its end on the trace's time axis, red where it failed — and
writes `trace.html` and, with Chromium (`playwright`), `trace.png` beside the plugin's
README.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OPUS = Path(sys.executable).parent / "opus"


def spans_of(text: str) -> list[dict[str, Any]]:
    """Every JSON object of the console exporter in `text` (log lines between them)."""
    decoder = json.JSONDecoder()
    spans, at = [], 0
    while (at := text.find("{\n", at)) != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at += 1
            continue
        if isinstance(value, dict) and "context" in value and "start_time" in value:
            spans.append(value)
        at = end
    return spans


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def waterfall(spans: list[dict[str, Any]]) -> str:
    """The spans as an HTML page: rows in tree order, bars on the trace's time axis."""
    by_id = {s["context"]["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_id")
        children.setdefault(parent if parent in by_id else None, []).append(span)
    for kids in children.values():
        kids.sort(key=lambda s: seconds(s["start_time"]))
    start = min(seconds(s["start_time"]) for s in spans)
    end = max(seconds(s["end_time"]) for s in spans)
    width = end - start or 1.0
    rows: list[str] = []

    def row(span: dict[str, Any], depth: int) -> None:
        begin, finish = seconds(span["start_time"]) - start, seconds(span["end_time"]) - start
        failed = span.get("status", {}).get("status_code") == "ERROR"
        service = span.get("resource", {}).get("attributes", {}).get("service.name", "")
        scope = "opus" if span["name"].startswith(("opus run", "task ", "attempt ")) else "user"
        left, size = 100 * begin / width, max(100 * (finish - begin) / width, 0.3)
        label = f"{(finish - begin) * 1000:.1f} ms"
        rows.append(
            f'<div class="row"><div class="name" style="padding-left:{depth * 16 + 6}px">'
            f'<span class="svc {scope}">{html.escape(service)}</span> {html.escape(span["name"])}'
            f'</div><div class="lane"><div class="bar {scope}{" failed" if failed else ""}" '
            f'style="left:{left:.3f}%;width:{size:.3f}%"></div>'
            f'<span class="dur" style="left:calc({left + size:.3f}% + 4px)">{label}</span>'
            "</div></div>"
        )
        for child in children.get(span["context"]["span_id"], []):
            row(child, depth + 1)

    for root in children.get(None, []):
        row(root, 0)
    ticks = "".join(
        f'<span style="left:{100 * i / 4}%">{width * i / 4 * 1000:.0f} ms</span>' for i in range(5)
    )
    trace_id = spans[0]["context"]["trace_id"]
    return f"""<!doctype html><meta charset="utf-8"><title>trace {trace_id}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 16px; color: #1d2433; }}
h1 {{ font-size: 16px; margin: 0 0 4px; }} .sub {{ color: #667; margin-bottom: 12px; }}
.row {{ display: flex; border-bottom: 1px solid #eef0f4; height: 24px; align-items: center; }}
.name {{ width: 340px; white-space: nowrap; overflow: hidden; }}
.lane {{ position: relative; flex: 1; height: 100%; margin-right: 70px; }}
.bar {{ position: absolute; top: 6px; height: 12px; border-radius: 2px; background: #3b82c4; }}
.bar.user {{ background: #2f9e6f; }} .bar.failed {{ background: #d64545; }}
.dur {{ position: absolute; top: 5px; color: #667; font-size: 11px; white-space: nowrap; }}
.svc {{ font-size: 10px; padding: 1px 4px; border-radius: 3px; color: white; background: #3b82c4; }}
.svc.user {{ background: #2f9e6f; }}
.axis {{ position: relative; margin-left: 340px; margin-right: 70px; height: 18px; color: #667;
  font-size: 11px; border-bottom: 1px solid #ccd; }}
.axis span {{ position: absolute; transform: translateX(-50%); }}
</style>
<h1>Trace {trace_id[2:14]}…: {len(spans)} spans, {width * 1000:.0f} ms</h1>
<div class="sub">opus's spans (blue: run, task, attempt) and the processors' own (green),
from the worker processes of the <code>processpool</code> runner; red: failed.</div>
<div class="axis">{ticks}</div>
{"".join(rows)}
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder) / "shop"
        shutil.copytree(
            HERE, project, ignore=shutil.ignore_patterns("build", "trace.*", "*.py[co]")
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPUS_"))}
        env.update(OTEL_TRACES_EXPORTER="console", XDG_STATE_HOME=str(Path(folder) / "state"))
        ran = subprocess.run(
            [str(OPUS), "run"], cwd=project, env=env, capture_output=True, text=True, check=False
        )
        if ran.returncode != 0:
            sys.stderr.write(ran.stdout + ran.stderr)
            return ran.returncode
    spans = spans_of(ran.stderr)
    page = HERE / "trace.html"
    page.write_text(waterfall(spans))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium") or None, args=["--no-sandbox"]
        )
        view = browser.new_page(viewport={"width": 1100, "height": 200})
        view.goto(page.as_uri())
        view.screenshot(path=str(HERE.parent / "trace.png"), full_page=True)
        browser.close()
    print(f"{len(spans)} spans: {page} and {HERE.parent / 'trace.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
