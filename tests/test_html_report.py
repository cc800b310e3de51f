"""The HTML report: made from real runs, opened in a real browser (Debian's headless Chromium).

One browser serves the whole module. Every page is checked for console errors and for
requests other than the report file itself; screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error, opus

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks
from opus_core.history import find_run
from opus_core.html_report import (
    ReportError,
    embed_json,
    pack_lanes,
    render_report,
    task_layers,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE_NAME = "</script><script>alert(1)</script>"
HOSTILE_ERROR = '<img src=x onerror="window.pwned=1"> --> <!-- \u2028 done'


# -- real runs ---------------------------------------------------------------------------------


class Scripted(TaskProcessor):
    """Fails when the spec says `fail`, or on its first `fail_attempts` attempts; prints
    what the spec says to `say`."""

    kind = "Scripted"

    def __init__(self) -> None:
        super().__init__(logger=LoggerWrapper("CRITICAL"))
        self.tries: dict[str, int] = {}

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        attempt = self.tries[task.task_id] = self.tries.get(task.task_id, 0) + 1
        if "say" in task.spec:
            print(f"{task.spec['say']} on attempt {attempt}")
        if attempt <= task.spec.get("fail_attempts", 0):
            raise ConnectionError(f"{task.task_id}: lost on attempt {attempt}")
        time.sleep(task.spec.get("seconds", 0))
        if "fail" in task.spec:
            raise RuntimeError(task.spec["fail"])
        return None


def real_run(
    specs: list[tuple[str, list[str], dict[str, Any]]],
    workers: int = 4,
    resources: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run `specs` (name, dependencies, spec) on the threadpool runner; the run from the
    history. A spec's `needs` are its task's resources (capacities: `resources`)."""
    tasks = Tasks(
        logger=LoggerWrapper("CRITICAL"),
        runner="threadpool",
        runner_options={"max_workers": workers},
        resources=resources,
    )
    tasks.register_task_processor(Scripted())
    for name, dependencies, spec in specs:
        metadata: dict[str, Any] = {"name": name, "dependencies": dependencies}
        if spec.get("fail_attempts"):
            metadata["retries"] = spec["fail_attempts"]
        if spec.get("needs"):
            metadata["resources"] = spec["needs"]
        tasks.add_task(
            Task(kind=spec.get("kind", "Scripted"), version="v1", metadata=metadata, spec=spec)
        )
    report = tasks.process_context()
    assert report.run_id is not None
    return find_run(tasks.state_persistence, report.run_id)


def small_specs() -> list[tuple[str, list[str], dict[str, Any]]]:
    """20 tasks in 5 layers: one fails for good (its dependents are skipped), one succeeds on
    its third attempt, and one has a hostile name and error."""
    specs: list[tuple[str, list[str], dict[str, Any]]] = []
    for layer in range(4):
        for k in range(4):
            deps = (
                [] if layer == 0 else [f"step-{layer - 1}-{k}", f"step-{layer - 1}-{(k + 1) % 4}"]
            )
            specs.append((f"step-{layer}-{k}", deps, {}))
    specs[5] = (specs[5][0], specs[5][1], {"fail_attempts": 2})  # step-1-1: third time lucky
    specs[13] = (specs[13][0], specs[13][1], {"fail": "disk full"})  # step-3-1
    specs.append((HOSTILE_NAME, ["step-0-0"], {"fail": HOSTILE_ERROR}))
    specs.append(("after-hostile", [HOSTILE_NAME], {}))
    specs.append(("last", ["step-3-0", "step-3-1"], {}))
    specs.append(("lonely", [], {}))
    return specs


@pytest.fixture(scope="module")
def small_run() -> dict[str, Any]:
    return real_run(small_specs())


@pytest.fixture(scope="module")
def big_run() -> dict[str, Any]:
    """10,000 tasks in 10 layers of 1,000 and 3 kinds: 10 fail (their dependents are
    skipped), 99 succeed on a retry."""
    specs: list[tuple[str, list[str], dict[str, Any]]] = []
    width = 1000
    for i in range(10_000):
        layer, k = divmod(i, width)
        deps = (
            []
            if layer == 0
            else sorted(
                {f"t{(layer - 1) * width + k}", f"t{(layer - 1) * width + (k * 7 + 3) % width}"}
            )
        )
        spec: dict[str, Any] = {"kind": ("Extract", "Transform", "Load")[i % 3]}
        if i % 997 == 13:
            spec["fail"] = f"t{i} broke"
        elif i % 101 == 7:
            spec["fail_attempts"] = 1
        specs.append((f"t{i}", deps, spec))
    tasks = Tasks(
        logger=LoggerWrapper("CRITICAL"), runner="threadpool", runner_options={"max_workers": 4}
    )
    for kind in ("Extract", "Transform", "Load"):
        tasks.register_task_processor(type(kind, (Scripted,), {"kind": kind})())
    for name, dependencies, spec in specs:
        metadata: dict[str, Any] = {"name": name, "dependencies": dependencies}
        if spec.get("fail_attempts"):
            metadata["retries"] = 1
        tasks.add_task(Task(kind=spec["kind"], version="v1", metadata=metadata, spec=spec))
    report = tasks.process_context()
    assert report.run_id is not None
    return find_run(tasks.state_persistence, report.run_id)


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Opened:
    """A report open in a page, with what the page logged and requested."""

    def __init__(self, browser: Any, path: Path, width: int = 1400) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready='1']")

    def clean(self) -> None:
        """No console errors, no dialogs, and no request but the report itself."""
        assert self.errors == []
        assert self.dialogs == []
        assert self.requests == [self.url]

    def detail(self) -> str:
        text: str = self.page.inner_text("aside#detail.open")
        return text


def open_report(browser: Any, run: dict[str, Any], path: Path, width: int = 1400) -> Opened:
    write_report(run, path)
    return Opened(browser, path, width)


def screenshot(opened: Opened, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    opened.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# -- in the browser ------------------------------------------------------------------------------


@pytest.mark.slow  # a browser
def test_the_graph_has_a_box_per_task_and_the_timeline_a_bar_per_attempt(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    opened = open_report(browser, small_run, tmp_path / "report.html")
    page = opened.page
    names = [t["name"] for t in small_run["tasks"]]
    shown = page.eval_on_selector_all(
        "#graph .node.task title", "titles => titles.map(t => t.textContent.split(' — ')[0])"
    )
    assert sorted(shown) == sorted(names)
    assert page.locator("#graph .node.cluster").count() == 0
    assert small_run["counts"] == {"succeeded": 16, "failed": 2, "skipped": 2}
    for status, count in small_run["counts"].items():
        assert page.locator(f"#graph .node.task rect.st-{status}").count() == count
    attempts = sum(len(t["attempt_log"]) for t in small_run["tasks"])
    assert attempts == sum(t["attempts"] for t in small_run["tasks"])
    assert page.locator("#timeline rect.attempt").count() == attempts
    failed_attempts = sum(
        a["status"] == "failed" for t in small_run["tasks"] for a in t["attempt_log"]
    )
    assert failed_attempts == 2 + 2  # step-1-1's first two; step-3-1 and the hostile one
    assert page.locator("#timeline rect.attempt.st-failed").count() == failed_attempts
    retried = names.index("step-1-1")
    assert page.locator(f'#timeline rect.attempt[data-task="{retried}"]').count() == 3
    assert page.locator("#tasks tbody tr").count() == len(names)
    header = page.inner_text("header.run")
    assert small_run["id"] in header and "FAILED" in header.upper()
    assert "2 failed" in header and "2 skipped" in header and "16 succeeded" in header
    opened.clean()
    screenshot(opened, "report.png")


@pytest.mark.slow  # a browser
def test_lanes_show_how_many_attempts_ran_at_once(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    opened = open_report(browser, small_run, tmp_path / "report.html")
    lanes = opened.page.evaluate("window.opusReport.lanes")
    assert 1 <= lanes <= 4  # four workers
    ys = set(
        opened.page.eval_on_selector_all(
            "#timeline rect.attempt", "rs => rs.map(r => r.getAttribute('y'))"
        )
    )
    assert len(ys) == lanes
    opened.clean()


@pytest.mark.slow  # a browser
def test_clicking_a_task_shows_its_error_and_traceback(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    opened = open_report(browser, small_run, tmp_path / "report.html")
    page = opened.page
    index = [t["name"] for t in small_run["tasks"]].index("step-3-1")
    page.click(f'#graph .node[data-task="{index}"]')
    detail = opened.detail()
    assert "step-3-1" in detail and "RuntimeError: disk full" in detail
    assert "Traceback (most recent call last)" in detail
    assert 'raise RuntimeError(task.spec["fail"])' in detail
    assert "Needed by (1)" in detail.replace("NEEDED BY", "Needed by")

    page.keyboard.press("Escape")
    assert page.locator("aside#detail.open").count() == 0

    retried = [t["name"] for t in small_run["tasks"]].index("step-1-1")
    page.click(f'#timeline rect.attempt[data-task="{retried}"] >> nth=0')
    detail = opened.detail()
    assert "step-1-1" in detail and "lost on attempt 1" in detail and "lost on attempt 2" in detail
    assert page.locator("#timeline .overlay rect").count() == 3  # its three attempts outlined

    page.click("#tasks tbody tr >> text=lonely")
    assert "lonely" in opened.detail() and "succeeded" in opened.detail().lower()
    opened.clean()


@pytest.mark.slow  # a browser
def test_a_tasks_panel_shows_what_each_attempt_printed_as_text(
    browser: Any, tmp_path: Path
) -> None:
    run = real_run([("talker", [], {"say": HOSTILE_ERROR, "fail_attempts": 1}), ("quiet", [], {})])
    opened = open_report(browser, run, tmp_path / "report.html")
    page = opened.page
    page.click("#tasks tbody tr >> text=talker")
    detail = opened.detail()
    assert "attempt 1: stdout" in detail and "attempt 2: stdout" in detail
    shown = page.locator("aside#detail pre.output").all_inner_texts()
    assert shown == [f"{HOSTILE_ERROR} on attempt 1\n", f"{HOSTILE_ERROR} on attempt 2\n"]
    assert page.evaluate("window.pwned === undefined")
    screenshot(opened, "report-output.png")
    page.click("#tasks tbody tr >> text=quiet")
    assert page.locator("aside#detail pre.output").count() == 0
    opened.clean()


@pytest.mark.slow  # a browser
def test_hostile_task_names_and_errors_are_shown_as_text(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    opened = open_report(browser, small_run, path)
    page = opened.page
    html = path.read_text()
    assert HOSTILE_NAME not in html and "<img" not in html and "\u2028" not in html
    assert page.evaluate("window.pwned === undefined")
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 2  # the data and the report's own script
    page.fill("#tasks input[type=search]", "alert(1)")  # its row, and its dependent's
    assert page.locator("#tasks tbody tr").count() == 2
    page.get_by_role("cell", name=HOSTILE_NAME, exact=True).click()
    detail = opened.detail()
    assert HOSTILE_NAME in detail
    assert "window.pwned=1" in detail and "\u2028" in page.inner_text("aside#detail pre.error")
    opened.clean()


@pytest.mark.slow  # a browser
def test_ten_thousand_tasks_open_ready_before_load_with_the_graph_grouped(
    browser: Any, big_run: dict[str, Any], tmp_path: Path
) -> None:
    # How long it takes is measured in benchmarks/report_open.py, not here.
    opened = open_report(browser, big_run, tmp_path / "report.html")
    page = opened.page
    timing = page.evaluate(
        "() => ({load: performance.getEntriesByType('navigation')[0].loadEventEnd,"
        " ready: performance.getEntriesByName('opus-report-ready')[0].startTime})"
    )
    assert timing["ready"] < timing["load"], timing  # drawn while the page loads
    assert page.locator("#graph .node.task").count() == 0
    groups = page.locator("#graph .node.cluster").count()
    assert groups == 30  # 10 layers x 3 kinds
    attempts = sum(len(t["attempt_log"]) for t in big_run["tasks"])
    drawn = page.eval_on_selector_all(
        "#timeline path.attempts", "ps => ps.reduce((n, p) => n + Number(p.dataset.count), 0)"
    )
    assert drawn == attempts == page.evaluate("window.opusReport.attempts")
    assert page.locator("#tasks tbody tr").count() == 100  # a page of rows, failures first
    assert "failed" in page.inner_text("#tasks tbody tr:first-child")
    screenshot(opened, "report-10000.png")

    # t13 failed: its group of 333 is too big to draw, so it opens into one group per status
    page.locator("#graph .node.cluster", has_text="Transform · layer 0").click()
    assert page.locator("#graph .node.cluster").count() == 31
    page.locator("#graph .node.cluster", has_text="Transform · layer 0 · failed").click()
    assert page.locator("#graph .node.task").count() == 1  # t13 alone failed in it
    failed = big_run["tasks"][13]
    assert failed["status"] == "failed"
    page.evaluate("window.opusReport.revealInGraph(13)")
    assert page.locator('#graph .node.task[data-task="13"]').count() == 1
    opened.clean()


SHOP = [  # the shop of the README's quick start: report needs totals and customers, totals needs orders
    ("orders", [], {}),
    ("customers", [], {}),
    ("totals", ["orders"], {}),
    ("report", ["totals", "customers"], {}),
]

GRAPH_GEOMETRY = """() => {
  const boxes = Array.from(document.querySelectorAll("#graph .node"), (g) => {
    const m = g.transform.baseVal.consolidate().matrix, r = g.querySelector("rect.box");
    return { id: g.dataset.id, x: m.e, y: m.f, w: r.width.baseVal.value, h: r.height.baseVal.value };
  });
  const edges = Array.from(document.querySelectorAll("#graph path.edge"), (p) => {
    const length = p.getTotalLength(), points = [];
    for (let k = 0; k <= Math.ceil(length); k++) {
      const q = p.getPointAtLength(k);
      points.push([q.x, q.y]);
    }
    return { from: p.dataset.from, to: p.dataset.to, points: points };
  });
  return { boxes: boxes, edges: edges };
}"""


def edges_under_boxes(page: Any) -> list[str]:
    """Each edge of the graph that passes through a box other than its two ends, as
    `from -> to under box`: the edges' paths sampled every pixel of their length, the boxes
    shrunk by a pixel (an edge may touch a box's border)."""
    geometry = page.evaluate(GRAPH_GEOMETRY)
    assert geometry["edges"] and geometry["boxes"]
    crossings = []
    for edge in geometry["edges"]:
        for box in geometry["boxes"]:
            if box["id"] in (edge["from"], edge["to"]):
                continue
            left, top = box["x"] + 1, box["y"] + 1
            right, bottom = box["x"] + box["w"] - 1, box["y"] + box["h"] - 1
            if any(left < x < right and top < y < bottom for x, y in edge["points"]):
                crossings.append(f"{edge['from']} -> {edge['to']} under {box['id']}")
                break
    return crossings


@pytest.mark.slow  # a browser
def test_no_edge_of_the_shop_example_passes_under_another_box(browser: Any, tmp_path: Path) -> None:
    run = real_run(SHOP)
    opened = open_report(browser, run, tmp_path / "report.html")
    page = opened.page
    names = [t["name"] for t in run["tasks"]]
    customers, report = names.index("customers"), names.index("report")
    long_edge = page.locator(f'#graph path.edge[data-from="t{customers}"][data-to="t{report}"]')
    assert long_edge.count() == 1
    assert edges_under_boxes(page) == []
    opened.clean()


def skipping_specs() -> list[tuple[str, list[str], dict[str, Any]]]:
    """24 tasks in 6 layers of 4: each needs one of the layer before, and some also one two
    or three layers back."""
    specs: list[tuple[str, list[str], dict[str, Any]]] = []
    for layer in range(6):
        for k in range(4):
            deps = [f"s-{layer - 1}-{k}"] if layer else []
            if layer >= 2 and k % 2 == 0:
                deps.append(f"s-{layer - 2}-{(k + 1) % 4}")
            if layer >= 3 and k == 1:
                deps.append(f"s-{layer - 3}-{(k + 2) % 4}")
            specs.append((f"s-{layer}-{k}", deps, {}))
    return specs


@pytest.mark.slow  # a browser
@pytest.mark.parametrize("specs", [small_specs, skipping_specs], ids=["20-tasks", "24-tasks"])
def test_no_edge_of_a_bigger_run_passes_under_another_box(
    browser: Any, specs: Any, tmp_path: Path
) -> None:
    run = real_run(specs())
    opened = open_report(browser, run, tmp_path / "report.html")
    assert opened.page.locator("#graph path.edge").count() == sum(
        len(t["dependencies"]) for t in run["tasks"]
    )
    assert edges_under_boxes(opened.page) == []
    opened.clean()


@pytest.mark.slow  # a browser
def test_a_timeline_bar_shows_its_task_name_where_it_fits_and_a_tooltip_elsewhere(
    browser: Any, tmp_path: Path
) -> None:
    # A no-op with a long name before a 2 s task with a short one: the no-op's bar stays too
    # narrow for its name unless it takes a third of a second, which a busy machine once
    # made a no-op named "blink" take (a tenth of a second was enough for five letters).
    blink = "blink-a-no-op-whose-name-is-far-wider-than-its-bar-could-ever-be"
    run = real_run([(blink, [], {}), ("load", [blink], {"seconds": 2.0})])
    opened = open_report(browser, run, tmp_path / "report.html")
    page = opened.page
    names = [t["name"] for t in run["tasks"]]
    long, short = names.index("load"), names.index(blink)
    label = page.locator(f'#timeline text.bar-label[data-task="{long}"]')
    assert label.text_content() == "load"
    bar = page.locator(f'#timeline rect.attempt[data-task="{long}"]')
    inside = page.evaluate(
        "([l, b]) => { const t = l.getBBox(), r = b.getBBox();"
        " return t.x >= r.x && t.x + t.width <= r.x + r.width; }",
        [label.element_handle(), bar.element_handle()],
    )
    assert inside
    assert bar.locator("title").count() == 0
    narrow = page.locator(f'#timeline rect.attempt[data-task="{short}"]')
    assert narrow.locator("title").text_content().startswith(f"{blink} — attempt 1")
    assert page.locator(f'#timeline text.bar-label[data-task="{short}"]').count() == 0
    opened.clean()


@pytest.mark.slow  # a browser
def test_the_timeline_can_colour_its_bars_by_the_resource_each_task_needs(
    browser: Any, tmp_path: Path
) -> None:
    run = real_run(
        [
            ("load", [], {"needs": {"db": 1}}),
            ("train", [], {"needs": {"gpu": 1, "db": 1}}),
            ("plain", [], {}),
        ],
        resources={"db": 2, "gpu": 1},
    )
    opened = open_report(browser, run, tmp_path / "report.html")
    page = opened.page
    names = [t["name"] for t in run["tasks"]]

    def bar_class(name: str) -> str:
        found: str = page.locator(
            f'#timeline rect.attempt[data-task="{names.index(name)}"]'
        ).get_attribute("class")
        return found

    assert bar_class("load") == "attempt st-succeeded"
    assert not page.locator("#timeline .legend.resources").is_visible()
    page.select_option("#colour-by", "resource")
    # Each bar takes its task's first resource by name: db for both load and train.
    assert bar_class("load") == bar_class("train") == "attempt res-0"
    assert bar_class("plain") == "attempt res-none"
    legend = page.locator("#timeline .legend.resources")
    assert legend.is_visible() and legend.inner_text().split() == ["db", "gpu", "no", "resource"]
    page.select_option("#colour-by", "status")
    assert bar_class("train") == "attempt st-succeeded"
    opened.clean()
    plain = open_report(browser, real_run([("a", [], {})]), tmp_path / "plain.html")
    assert plain.page.locator("#colour-by").count() == 0  # no resource: no choice to make
    plain.clean()


@pytest.mark.slow  # a browser
def test_at_800_pixels_the_status_start_and_duration_columns_are_not_cut(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    opened = open_report(browser, small_run, tmp_path / "report.html", width=800)
    cut = opened.page.evaluate(
        """() => Array.from(document.querySelectorAll("#tasks tr"), (row) =>
            [2, 3, 4, 5].map((k) => row.children[k])
              .filter((cell) => cell.scrollWidth > cell.clientWidth)
              .map((cell) => cell.textContent)).flat()"""
    )
    assert cut == []
    statuses = opened.page.eval_on_selector_all(
        "#tasks tbody tr td:nth-child(3)", "cells => cells.map(c => c.innerText.trim())"
    )
    assert "succeeded" in statuses
    opened.clean()
    screenshot(opened, "report-800.png")


@pytest.mark.slow  # a browser
def test_the_header_shows_when_the_run_started_as_the_cli_does(
    browser: Any, small_run: dict[str, Any], tmp_path: Path
) -> None:
    opened = open_report(browser, small_run, tmp_path / "report.html")
    started = opened.page.inner_text("header.run dl.facts dt:text-is('started') + dd")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", started), started
    assert started == datetime.fromtimestamp(small_run["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
    opened.clean()


# -- without a browser -----------------------------------------------------------------------------


def test_an_attempt_takes_the_first_lane_free_when_it_starts() -> None:
    lanes, count = pack_lanes([(0, 4), (1, 2), (2, 3), (3, 5), (4, 6), (0.5, 1)])
    assert lanes == [0, 1, 1, 1, 0, 1]  # an attempt ending at 1 frees its lane for one at 1
    assert count == 2
    assert pack_lanes([(0, 3), (1, 3), (2, 3), (3, 4)]) == ([0, 1, 2, 0], 3)
    assert pack_lanes([]) == ([], 0)


def test_a_task_is_one_layer_past_its_deepest_dependency() -> None:
    assert task_layers([[], [0], [0, 1], [], [3, 2]]) == [0, 1, 2, 0, 3]
    assert task_layers([[1], [0]]) in ([1, 0], [0, 1])  # a cycle is broken, not followed


def test_embedded_json_cannot_end_its_script_element() -> None:
    data = {"name": "</script><!-- <script>", "text": "a\u2028b\u2029c & d"}
    text = embed_json(data)
    for bad in ("</", "<!--", "<script", "\u2028", "\u2029", "&"):
        assert bad not in text
    assert json.loads(text) == data


def test_lone_surrogates_are_escaped_so_the_page_encodes() -> None:
    data = {"error": b"/x/caf\xe9.csv".decode("utf-8", "surrogateescape")}
    text = embed_json(data)
    assert "\\udce9" in text and text.encode("utf-8")
    assert json.loads(text) == data


def test_the_page_allows_only_its_own_script_and_style_and_names_no_url(
    small_run: dict[str, Any],
) -> None:
    page = render_report(small_run)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    anywhere = page.replace('"http://www.w3.org/2000/svg"', "")  # a namespace, not fetched
    assert "http://" not in anywhere and "https://" not in anywhere
    assert re.search(r"<[a-z]+\b[^>]*\b(src|href)=", page) is None


def test_a_report_on_something_that_is_not_a_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run record"):
        render_report({"id": "x"})
    with pytest.raises(ReportError, match="cannot write the report to .*missing"):
        write_report({"id": "x", "tasks": []}, tmp_path / "missing" / "r.html")


# -- the command line --------------------------------------------------------------------------------

PROJECT = """\
[opus]
processors = ["procs:Flaky"]

[[tasks]]
kind = "Flaky"
version = "v1"
[tasks.metadata]
name = "a"

[[tasks]]
kind = "Flaky"
version = "v1"
[tasks.metadata]
name = "b"
dependencies = ["a"]
retries = 1
[tasks.spec]
fail = "boom"
"""

PROCESSORS = """\
from opus_core import TaskProcessor


class Flaky(TaskProcessor):
    kind = "Flaky"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        if "fail" in task.spec:
            raise RuntimeError(task.spec["fail"])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project on the default persistence (sqlite), which keeps the history between commands."""
    (tmp_path / "opus.toml").write_text(PROJECT)
    (tmp_path / "procs.py").write_text(PROCESSORS)
    return tmp_path


def test_opus_run_report_writes_the_report_also_when_a_task_failed(project: Path) -> None:
    result = opus("run", "--report", "out/run.html", cwd=project)
    assert result.returncode == 2  # no folder out/: said before anything runs
    assert result.stderr.count("\n") == 1 and "out/run.html" in result.stderr
    assert "a " not in result.stdout
    (project / "out").mkdir()
    result = opus("run", "--report", "out/run.html", cwd=project)
    assert result.returncode == 1, result.stderr
    page = (project / "out" / "run.html").read_text()
    assert "RuntimeError: boom" in page
    assert "written to out/run.html" in result.stderr


def test_opus_report_writes_the_latest_run_or_the_one_named(project: Path) -> None:
    assert opus("run", cwd=project).returncode == 1
    first = opus("report", "-o", "first.html", cwd=project)
    assert first.returncode == 0, first.stderr
    run_id = first.stderr.split("report of run ")[1].split()[0]
    assert run_id in (project / "first.html").read_text()
    assert opus("run", cwd=project).returncode == 1
    again = opus("report", run_id[:22], "-o", "again.html", cwd=project)
    assert again.returncode == 0, again.stderr
    assert run_id in again.stderr
    latest = opus("report", cwd=project)
    assert latest.returncode == 0 and (project / "report.html").exists()
    assert run_id not in latest.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-run"], "no run 'no-such-run'"),
        (["-o", "missing/r.html"], "cannot write the report to missing/r.html: there is no folder"),
        (["-o", "."], "it is a directory"),
    ],
)
def test_opus_report_errors_are_one_line_with_exit_status_2(
    project: Path, args: list[str], message: str
) -> None:
    assert opus("run", cwd=project).returncode == 1
    result = opus("report", *args, cwd=project)
    assert result.returncode == 2
    assert result.stderr.startswith("opus: error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_opus_report_without_history_says_how_to_keep_it(tmp_path: Path) -> None:
    (tmp_path / "opus.toml").write_text('[opus]\npersistence = "memory"\n')
    result = opus("report", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "memory persistence" in result.stderr and "opus run --report" in result.stderr


@pytest.mark.slow  # a browser
def test_the_report_example_writes_a_report_with_a_failure_and_a_retry(
    browser: Any, tmp_path: Path
) -> None:
    target = tmp_path / "example.html"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "report.py"), "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "10 succeeded, 1 failed, 1 skipped" in result.stdout
    opened = Opened(browser, target)
    assert opened.page.locator("#graph .node.task").count() == 12
    assert opened.page.locator("#timeline rect.attempt").count() == 12  # train: two attempts
    opened.page.click("#tasks tbody tr >> text=publish-docs")
    assert "PermissionError: 403 Forbidden: docs bucket" in opened.detail()
    opened.clean()
    screenshot(opened, "report-example.png")


def test_a_report_follows_a_symlink_and_writes_into_a_device_or_fifo(project: Path) -> None:
    assert opus("run", cwd=project).returncode == 1
    (project / "real.html").write_text("old")
    (project / "link.html").symlink_to("real.html")
    (project / "dangling.html").symlink_to("made.html")
    (project / "nowhere.html").symlink_to("missing/made.html")
    os.mkfifo(project / "fifo")
    os.mknod(project / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))  # as /dev/full

    assert opus("report", "-o", "link.html", cwd=project).returncode == 0
    assert opus("run", "--report", "dangling.html", cwd=project).returncode == 1
    for link, real in (("link.html", "real.html"), ("dangling.html", "made.html")):
        assert os.readlink(project / link) == real  # the link is kept, its file written
        assert "RuntimeError: boom" in (project / real).read_text()
    nowhere = one_line_error(opus("report", "-o", "nowhere.html", cwd=project))
    assert "nowhere.html (a symlink to" in nowhere and "there is no folder" in nowhere

    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append((project / "fifo").read_bytes()))
    reader.start()
    assert opus("report", "-o", "fifo", cwd=project).returncode == 0
    reader.join(timeout=30)
    assert received and b"RuntimeError: boom" in received[0]
    full = one_line_error(opus("report", "-o", "full", cwd=project))
    assert full == "opus: error: cannot write the report to full: No space left on device"
    assert stat.S_ISFIFO((project / "fifo").lstat().st_mode)
    assert stat.S_ISCHR((project / "full").lstat().st_mode)

    to_stdout = opus("report", "-o", "/dev/stdout", cwd=project)
    assert to_stdout.returncode == 0 and to_stdout.stdout.startswith("<!DOCTYPE html>")


SURROGATE_PROCESSORS = """\
from opus_core import TaskProcessor


class Flaky(TaskProcessor):
    kind = "Flaky"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        if "fail" in task.spec:
            raise RuntimeError(b"/x/caf\\xe9.csv".decode("utf-8", "surrogateescape"))
"""


def test_a_file_name_that_is_not_utf_8_in_an_error_is_reported(project: Path) -> None:
    (project / "procs.py").write_text(SURROGATE_PROCESSORS)
    # The traceback of the failure is printed as it is; read it back as text.
    escaped = {"PYTHONIOENCODING": "utf-8:backslashreplace"}
    result = opus("run", "--report", "run.html", cwd=project, env=escaped)
    assert result.returncode == 1, result.stderr
    assert "RuntimeError: /x/caf\\udce9.csv" in (project / "run.html").read_text()
    again = opus("report", "-o", "again.html", cwd=project)
    assert again.returncode == 0, again.stderr


def test_opus_run_dry_run_with_a_report_is_refused(project: Path) -> None:
    result = opus("run", "--dry-run", "--report", "r.html", cwd=project)
    assert result.returncode == 2
    assert one_line_error(result) == (
        "opus: error: --report writes the report of a run, and --dry-run runs nothing: "
        "leave one out"
    )
    assert not (project / "r.html").exists()
