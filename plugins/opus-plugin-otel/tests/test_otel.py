"""The otel plugin: spans of runs, tasks and attempts, and the trace carried into the work.

In this process the spans go to the SDK's in-memory exporter (the program's own provider,
which the plugin uses when one is set); a real `opus` process exports them over OTLP/HTTP
to a receiver the test starts on loopback, decoded with `opentelemetry-proto`.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import OPUS, one_line_error, opus
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opus_plugin_otel import Options, enabled, settings
from opus_plugin_otel.tracing import Tracing

from opus_core import LoggerWrapper, Task, TaskProcessor, Tasks

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def in_memory_provider() -> None:
    """This process's global provider: the program's own, which the plugin traces with."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture(autouse=True)
def fresh_spans() -> Iterator[None]:
    EXPORTER.clear()
    yield
    EXPORTER.clear()


class Traced(TaskProcessor):
    """Opens a span of its own; fails the attempts `spec.fail_attempts` counts in a file."""

    kind = "Traced"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        with trace.get_tracer("user").start_as_current_span(f"user work {task.name}"):
            pass
        counter = task.spec.get("counter")
        if counter:
            with open(counter, "a") as tally:
                tally.write(".")
            if len(Path(counter).read_text()) <= task.spec.get("fail_attempts", 0):
                raise ConnectionError(f"{task.name} lost its connection")
        if task.spec.get("fail"):
            raise RuntimeError("broken for good")
        return {}


def spans_by_name() -> dict[str, Any]:
    return {span.name: span for span in EXPORTER.get_finished_spans()}


def parent_of(span: Any) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.parametrize("runner", ["sequential", "threadpool"])
def test_a_run_is_a_tree_of_run_task_attempt_and_the_users_own_spans(
    runner: str, tmp_path: Path
) -> None:
    tracing = Tracing(settings(Options(enabled=True, exporter="none")))
    tasks = Tasks(plugins=[tracing], logger=LoggerWrapper("CRITICAL"), runner=runner)
    tasks.register_task_processor(Traced())
    counter = str(tmp_path / "tries")
    tasks.add_task(
        Task(
            "Traced",
            "v1",
            {"counter": counter, "fail_attempts": 1},
            {"name": "flaky", "retries": 1},
        )
    )
    tasks.add_task(Task("Traced", "v1", {"fail": True}, {"name": "broken"}))
    tasks.add_task(Task("Traced", "v1", {}, {"name": "after", "dependencies": ["broken"]}))
    report = tasks.process_context()
    assert [report[n].status for n in ("flaky", "broken", "after")] == [
        "succeeded",
        "failed",
        "skipped",
    ]
    spans = EXPORTER.get_finished_spans()
    [run] = [s for s in spans if s.name == "opus run apply"]
    assert run.attributes["opus.run.id"] == report.run_id
    assert run.attributes["opus.run.failed"] == 1 and run.status.status_code.name == "ERROR"

    tasks_of_run = {s.name: s for s in spans if parent_of(s) == run.context.span_id}
    assert set(tasks_of_run) == {"task flaky", "task broken", "task after"}
    flaky = tasks_of_run["task flaky"]
    assert flaky.attributes["opus.attempts"] == 2 and flaky.attributes["opus.runner"] == runner
    assert [e.name for e in flaky.events] == ["retry"]
    check_attempts_of_flaky(spans, flaky, run)

    broken = tasks_of_run["task broken"]
    assert broken.status.status_code.name == "ERROR"
    assert (
        'raise RuntimeError("broken for good")'
        in broken.events[-1].attributes["exception.stacktrace"]
    )
    after = tasks_of_run["task after"]  # never started: a span all the same
    assert after.attributes["opus.status"] == "skipped" and after.attributes["opus.attempts"] == 0


def check_attempts_of_flaky(spans: Any, flaky: Any, run: Any) -> None:
    """Task flaky's two attempts: the first failed, the second succeeded, and each holds
    the span the user's code opened in it."""
    attempts = sorted(
        (s for s in spans if parent_of(s) == flaky.context.span_id), key=lambda s: s.start_time
    )
    assert [(a.name, a.status.status_code.name) for a in attempts] == [
        ("attempt 1", "ERROR"),
        ("attempt 2", "OK"),
    ]
    assert attempts[0].events[0].attributes["exception.type"] == "ConnectionError"
    for attempt in attempts:  # the user's span, in each attempt, is the attempt's child
        [mine] = [s for s in spans if parent_of(s) == attempt.context.span_id]
        assert mine.name == "user work flaky"
        assert mine.context.trace_id == run.context.trace_id


def test_a_timeout_is_an_event_and_a_command_gets_the_attempts_traceparent(
    tmp_path: Path,
) -> None:
    tracing = Tracing(settings(Options(enabled=True, exporter="none")))
    tasks = Tasks(plugins=[tracing], logger=LoggerWrapper("INFO"))
    tasks.add_task(Task("Command", "v1", {"run": "echo tp=$TRACEPARENT"}, {"name": "shell"}))
    tasks.add_task(Task("Command", "v1", {"run": "sleep 5"}, {"name": "slow", "timeout": 0.3}))
    report = tasks.process_context()
    assert report["slow"].status == "timed_out"
    spans = spans_by_name()
    slow = spans["task slow"]
    assert [e.name for e in slow.events] == ["timeout", "exception"]
    from opus_core.history import find_run

    run = find_run(tasks.state_persistence, report.run_id or "latest")
    [shell] = [t for t in run["tasks"] if t["name"] == "shell"]
    log = shell["attempt_log"][0]["output"]["log"]
    [attempt] = [
        s
        for s in EXPORTER.get_finished_spans()
        if s.name == "attempt 1" and s.attributes["opus.task.id"] == "shell"
    ]
    expected = f"00-{attempt.context.trace_id:032x}-{attempt.context.span_id:016x}-0"
    assert f"shell: tp={expected}" in log


def test_off_unless_enabled_or_an_exporter_is_named_in_the_environment() -> None:
    assert not enabled(Options(), environ={})
    assert enabled(Options(), environ={"OTEL_TRACES_EXPORTER": "otlp"})
    assert not enabled(Options(), environ={"OTEL_TRACES_EXPORTER": "none"})
    assert enabled(Options(enabled=True), environ={})
    assert not enabled(Options(enabled=True), environ={"OTEL_SDK_DISABLED": "true"})
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert settings(Options(exporter="console"), environ=grpc)["protocol"] == "grpc"
    assert settings(Options(service_name="shop"), environ={})["service_name"] == "shop"


PROJECT = """
[opus]
processors = ["traced:Traced"]
{opus}

[plugins.otel]
{otel}

[[tasks]]
kind = "Traced"
version = "v1"
metadata = {{ name = "flaky", retries = 1, retry_sleep_time = 0 }}
spec = {{ counter = "tries.txt", fail_attempts = 1 }}

[[tasks]]
kind = "Traced"
version = "v1"
metadata = {{ name = "next", dependencies = ["flaky"] }}

[[tasks]]
kind = "Command"
version = "v1"
metadata = {{ name = "shell" }}
spec = {{ run = "echo tp=$TRACEPARENT" }}
"""

PROCESSOR = """
import os
from pathlib import Path

from opentelemetry import trace
from opus_core import TaskProcessor


class Traced(TaskProcessor):
    kind = "Traced"

    def process_task(self, task, command, context, key_value_store, state_persistence):
        with trace.get_tracer("user").start_as_current_span(f"user work {task.name}") as span:
            span.set_attribute("pid", os.getpid())
        counter = task.spec.get("counter")
        if counter:
            with open(counter, "a") as tally:
                tally.write(".")
            if len(Path(counter).read_text()) <= task.spec.get("fail_attempts", 0):
                raise ConnectionError("lost")
        if task.spec.get("wait_for"):
            Path("started").touch()
            import time
            while not Path(task.spec["wait_for"]).exists():
                time.sleep(0.01)
        return {}
"""


def project(tmp_path: Path, opus_section: str = "", otel: str = "enabled = true") -> Path:
    (tmp_path / "traced.py").write_text(textwrap.dedent(PROCESSOR))
    (tmp_path / "opus.toml").write_text(PROJECT.format(opus=opus_section, otel=otel))
    return tmp_path


def test_opus_run_traces_when_the_table_enables_it(tmp_path: Path) -> None:
    ran = opus("run", cwd=project(tmp_path), env={"OTEL_TRACES_EXPORTER": ""})
    assert ran.returncode == 0, ran.stderr
    names = sorted(spans_by_name())
    assert names == [
        "attempt 1",
        "attempt 2",
        "opus run apply",
        "task flaky",
        "task next",
        "task shell",
        "user work flaky",
        "user work next",
    ]


def test_opus_run_does_not_trace_by_default(tmp_path: Path) -> None:
    ran = opus("run", cwd=project(tmp_path, otel=""), env={"OTEL_TRACES_EXPORTER": ""})
    assert ran.returncode == 0, ran.stderr
    # the user's own spans are the program's business; opus made none
    names = [span.name for span in EXPORTER.get_finished_spans()]
    assert sorted(names) == ["user work flaky", "user work flaky", "user work next"]
    listed = opus("plugins", "list", cwd=tmp_path)
    [row] = [line for line in listed.stdout.splitlines() if line.startswith("otel ")]
    assert "options: [plugins.otel]" in row


def test_a_wrong_option_is_one_line_naming_the_file_and_key(tmp_path: Path) -> None:
    result = opus("run", cwd=project(tmp_path, otel='exporter = "jaeger"'))
    assert result.returncode == 2
    line = one_line_error(result)
    assert "opus.toml" in line and "exporter" in line and "otlp, console, none" in line


# -- a real opus process, exporting over OTLP/HTTP ----------------------------------------------


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: keeps each span it is sent, decoded."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[dict[str, Any]] = []
        spans = self.spans

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    service = {
                        a.key: a.value.string_value for a in resource.resource.attributes
                    }.get("service.name")
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            spans.append(
                                {
                                    "name": span.name,
                                    "trace": span.trace_id.hex(),
                                    "id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex() or None,
                                    "service": service,
                                    "status": span.status.code,
                                    "events": [e.name for e in span.events],
                                    "attributes": {
                                        a.key: getattr(a.value, a.value.WhichOneof("value"))
                                        for a in span.attributes
                                    },
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def check_tree(spans: list[dict[str, Any]], runner: str) -> None:
    """run → task → attempt → the user's span, in one trace, for every task."""
    by_id = {s["id"]: s for s in spans}
    [run] = [s for s in spans if s["name"] == "opus run apply"]
    assert run["parent"] is None and run["service"] == "opus"
    assert {s["trace"] for s in spans} == {run["trace"]}
    users = [s for s in spans if s["name"].startswith("user work")]
    assert sorted(s["name"] for s in users) == [
        "user work flaky",
        "user work flaky",
        "user work next",
    ]
    for mine in users:
        attempt = by_id[mine["parent"]]
        task = by_id[attempt["parent"]]
        assert attempt["name"].startswith("attempt ") and task["name"].startswith("task ")
        assert by_id[task["parent"]] is run
        assert task["attributes"]["opus.runner"] == runner
    flaky = next(s for s in spans if s["name"] == "task flaky")
    assert flaky["events"] == ["retry"]


@pytest.mark.slow  # a real opus process per runner
@pytest.mark.parametrize("runner", ["sequential", "threadpool", "process", "processpool"])
def test_spans_reach_a_collector_with_user_spans_under_their_attempt_on_every_runner(
    runner: str, tmp_path: Path, receiver: Receiver
) -> None:
    root = project(
        tmp_path, f'runner = "{runner}"', f'enabled = true\nendpoint = "{receiver.endpoint}"'
    )
    ran = opus("run", cwd=root, process=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    check_tree(receiver.spans, runner)
    shell_attempt = next(
        s
        for s in receiver.spans
        if s["name"] == "attempt 1" and s["attributes"]["opus.task.id"] == "shell"
    )
    assert f"tp=00-{shell_attempt['trace']}-{shell_attempt['id']}-0" in ran.stderr


@pytest.mark.slow  # a real opus process and a Dask cluster
def test_spans_of_dask_workers_reach_the_collector_under_their_attempt(
    tmp_path: Path, receiver: Receiver
) -> None:
    dask = 'runner = "dask"\n\n[runners.dask]\nn_workers = 1\nthreads_per_worker = 2\n'
    root = project(tmp_path, "", f'enabled = true\nendpoint = "{receiver.endpoint}"')
    text = (
        (root / "opus.toml")
        .read_text()
        .replace("[opus]\n", "[opus]\n" + dask.split("\n\n")[0] + "\n", 1)
    )
    (root / "opus.toml").write_text(text + "\n" + dask.split("\n\n")[1])
    ran = opus("run", cwd=root, process=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    check_tree(receiver.spans, "dask")
    workers = {s["attributes"].get("pid") for s in receiver.spans if s["name"].startswith("user")}
    assert str(os.getpid()) not in {str(p) for p in workers}


@pytest.mark.slow  # a real process, stopped by a signal
def test_a_run_stopped_by_sigterm_still_exports_its_spans(
    tmp_path: Path, receiver: Receiver
) -> None:
    root = project(
        tmp_path, 'runner = "threadpool"', f'enabled = true\nendpoint = "{receiver.endpoint}"'
    )
    text = (root / "opus.toml").read_text()
    (root / "opus.toml").write_text(
        text + '\n[[tasks]]\nkind = "Traced"\nversion = "v1"\nmetadata = { name = "waits" }\n'
        'spec = { wait_for = "never" }\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPUS_", "OTEL_"))}
    env["XDG_STATE_HOME"] = str(root / ".state")
    env["XDG_CONFIG_HOME"] = str(root / ".config")
    process = subprocess.Popen(
        [str(OPUS), "run"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    from harness import until

    assert until(lambda: (root / "started").exists())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    names = {s["name"] for s in receiver.spans}
    assert {"opus run apply", "task waits", "task flaky"} <= names, (sorted(names), stderr)
    [run] = [s for s in receiver.spans if s["name"] == "opus run apply"]
    assert run["attributes"]["opus.run.interrupted"] in (1, True)
    assert sys.executable  # the same interpreter ran opus


def test_an_unknown_exporter_in_the_environment_is_a_warning_unless_the_table_enables_it(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, otel="")
    ran = opus("run", cwd=root, env={"OTEL_TRACES_EXPORTER": "zipkin"})
    assert ran.returncode == 0, ran.stderr  # the variable may be meant for another tool
    assert (
        "opus: warning: otel: OTEL_TRACES_EXPORTER must name otlp, console, none "
        "(or several, with commas), got 'zipkin'; runs are not traced" in ran.stderr
    )
    assert opus("tasks", cwd=root, env={"OTEL_TRACES_EXPORTER": "zipkin"}).returncode == 0
    enabled_here = project(tmp_path, otel="enabled = true")
    refused = opus("run", cwd=enabled_here, env={"OTEL_TRACES_EXPORTER": "zipkin"})
    assert refused.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in one_line_error(refused)


def test_exporter_names_are_read_as_the_sdk_reads_them() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "Console, OTLP"}
    assert settings(Options(), environ=environ)["exporters"] == ["console", "otlp"]
    assert settings(Options(exporter="none"), environ=environ)["exporters"] == []
    wrong = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be one of"):
        settings(Options(), environ=wrong)
    with pytest.raises(ValueError, match="^exporter must name"):
        Options(exporter="otlp,jaeger")


def test_grpc_without_its_exporter_installed_says_how_to_get_it(tmp_path: Path) -> None:
    result = opus("run", cwd=project(tmp_path, otel='enabled = true\nprotocol = "grpc"'))
    assert result.returncode == 2
    line = one_line_error(result)
    assert "pip install 'opus-plugin-otel[grpc]'" in line and "plugins.otel" in line


@pytest.mark.slow  # a real opus process: the console exporter of each worker process
def test_the_example_shop_exports_its_spans_and_the_picture_script_reads_them(
    tmp_path: Path,
) -> None:
    import importlib.util
    import shutil

    example = Path(__file__).resolve().parents[1] / "example"
    shop = tmp_path / "shop"
    shutil.copytree(example, shop, ignore=shutil.ignore_patterns("build", "trace.*"))
    ran = opus("run", cwd=shop, env={"OTEL_TRACES_EXPORTER": "console"}, process=True)
    assert ran.returncode == 0, ran.stderr
    assert (shop / "build" / "report.txt").read_text() == "Ada: 13.00\nGrace: 4.20\n"
    spec = importlib.util.spec_from_file_location("render_trace", example / "render_trace.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    spans = render.spans_of(ran.stderr)
    names = sorted(span["name"] for span in spans)
    assert names.count("read csv") == 2 and "connect to the till" in names
    assert {span["context"]["trace_id"] for span in spans} == {spans[0]["context"]["trace_id"]}
    page = render.waterfall(spans)
    assert page.count('class="row"') == len(spans) == 15


@pytest.mark.slow  # a real opus process with worker processes
def test_a_collector_that_is_down_is_one_line_and_costs_the_tasks_nothing(tmp_path: Path) -> None:
    root = project(
        tmp_path, 'runner = "processpool"', 'enabled = true\nendpoint = "http://127.0.0.1:9"'
    )
    text = (
        (root / "opus.toml")
        .read_text()
        .replace(
            'metadata = {{ name = "next", dependencies = ["flaky"] }}'.replace("{{", "{").replace(
                "}}", "}"
            ),
            'metadata = { name = "next", dependencies = ["flaky"], timeout = 2 }',
        )
    )
    (root / "opus.toml").write_text(text)
    ran = opus("run", cwd=root, process=True, env={"OTEL_TRACES_EXPORTER": ""})
    assert ran.returncode == 0, ran.stderr
    warned = [line for line in ran.stderr.splitlines() if "otel" in line]
    assert warned == [
        "opus: warning: otel: no collector at 127.0.0.1:9 (Connection refused): "
        "spans are not exported"
    ]
    assert "Transient error" not in ran.stderr


@pytest.mark.slow  # a real opus process: the console exporter of a forked task process
def test_the_console_exporters_spans_are_not_kept_as_a_tasks_output(tmp_path: Path) -> None:
    root = project(tmp_path, 'runner = "process"', 'enabled = true\nexporter = "console"')
    ran = opus("run", cwd=root, process=True)
    assert ran.returncode == 0, ran.stderr
    assert '"trace_id"' in ran.stderr  # shown, on stderr
    run = json.loads(opus("runs", "show", "--json", cwd=root).stdout)
    kept = json.dumps([a.get("output") for t in run["tasks"] for a in t["attempt_log"]])
    assert "trace_id" not in kept
