"""The hooks that trace a run, and what carries a trace into the work.

`Tracing` opens a span for the run, one for each task (a child of the run's) and one for
each attempt (a child of its task's); `AttemptTrace`, what `opus_attempt_context` returns,
travels with the attempt to wherever it runs and makes the attempt's span the current
one there, so a span user code opens is its child — in a thread, a forked process, a pool
worker or a Dask worker; a Command task gets it as `TRACEPARENT`.

The spans follow OpenTelemetry's conventions: a failure sets the span's status to ERROR
and adds an `exception` event (type, message, stacktrace); a retry is a `retry` event on
the task's span, a timeout a `timeout` event. Attributes are `opus.*`: see the README.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import urllib.parse
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from opus_core import hookimpl
from opus_core.capture import unkept
from opus_core.command_tasks import COMMAND_ENVIRONMENT
from opus_plugin_otel import __version__

SCOPE = "opus"
"""The instrumentation scope of opus's spans."""

QUEUE = 65_536
"""Spans the batch processor holds waiting for export (unless `OTEL_BSP_MAX_QUEUE_SIZE`
says): past it the SDK drops spans, saying so."""

_ENDED = frozenset({"succeeded", "restored"})
"""Statuses whose span is OK; every other final status (failed, timed_out, skipped,
cancelled) is an ERROR."""


def make_exporter(kind: str, settings: dict[str, Any]) -> SpanExporter:
    """The exporter `kind` ("otlp" or "console") with `settings`."""
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout carries the run's results
    endpoint = settings.get("endpoint")
    options: dict[str, Any] = {}
    if not any(f"OTEL_EXPORTER_OTLP{part}TIMEOUT" in os.environ for part in ("_", "_TRACES_")):
        # a collector that is slow holds the end of the run no longer than the flush does
        options["timeout"] = max(settings["flush_timeout"], 0.001)
    if settings["protocol"] == "grpc":
        try:
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            raise RuntimeError(
                "the otlp exporter over grpc needs opentelemetry-exporter-otlp-proto-grpc: "
                "pip install 'opus-plugin-otel[grpc]', or set protocol = \"http/protobuf\""
            ) from None
        exporter: SpanExporter = (
            grpc.OTLPSpanExporter(endpoint=endpoint, **options)
            if endpoint
            else grpc.OTLPSpanExporter(**options)
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint:
        return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", **options)
    return OTLPSpanExporter(**options)


def collector_address(settings: dict[str, Any], environ: Any = os.environ) -> tuple[str, int]:
    """Where the otlp exporter sends: host and port of `endpoint`, else of the
    `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` variables, else the protocol's default."""
    grpc = settings["protocol"] == "grpc"
    url = (
        settings.get("endpoint")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ("http://localhost:4317" if grpc else "http://localhost:4318")
    )
    parts = urllib.parse.urlsplit(url if "//" in url else f"//{url}")
    default = 4317 if grpc else (443 if parts.scheme == "https" else 80)
    return parts.hostname or "localhost", parts.port or default


def unreachable(settings: dict[str, Any]) -> str | None:
    """Why the collector cannot be reached (a TCP connection to it fails within half a
    second), or None when it can."""
    host, port = collector_address(settings)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return None
    except OSError as exc:
        return f"no collector at {host}:{port} ({exc.strerror or exc})"


class ForkSafe(SpanProcessor):
    """A `BatchSpanProcessor` that a forked child replaces with one of its own (a new
    exporter, a new connection): the parent's may be in the middle of an export."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.inner = self._new()
        os.register_at_fork(after_in_child=self._renew)

    def _new(self) -> SpanProcessor:
        kinds = self.settings["exporters"]
        if len(kinds) == 1:
            return self._batch(make_exporter(kinds[0], self.settings))
        every = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        for kind in kinds:
            every.add_span_processor(self._batch(make_exporter(kind, self.settings)))
        return every

    @staticmethod
    def _batch(exporter: SpanExporter) -> SpanProcessor:
        if "OTEL_BSP_MAX_QUEUE_SIZE" in os.environ:
            return BatchSpanProcessor(exporter)
        # A run makes spans faster than they are encoded (about 50 µs a span each way):
        # the SDK's 2,048 would drop most of a 10,000-task run's. This holds 32 MB or so.
        return BatchSpanProcessor(exporter, max_queue_size=QUEUE)

    def _renew(self) -> None:  # pragma: no cover - runs in the forked child
        self.inner = self._new()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


_lock = threading.Lock()
_owned: TracerProvider | None = None
"""The provider this plugin made in this process (None: none, or the program's own)."""


def provider_for(settings: dict[str, Any]) -> TracerProvider | Any:
    """The tracer provider to trace with: the program's, when it set an SDK one (a test's
    in-memory exporter, an application's own set-up); else one made from `settings` and
    set as the global provider, so that user code's `trace.get_tracer(...)` uses it too."""
    global _owned
    with _lock:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider) or _owned is not None:
            return current
        exporters = list(settings["exporters"])
        if "otlp" in exporters:
            problem = unreachable(settings)
            if problem is not None:  # said once; the run goes on, its spans go nowhere
                sys.stderr.write(f"opus: warning: otel: {problem}: spans are not exported\n")
                exporters.remove("otlp")
        resource = Resource.create({"service.name": settings["service_name"]})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(ForkSafe({**settings, "exporters": exporters}))
        trace.set_tracer_provider(provider)
        _owned = provider
        return provider


def flush(settings: dict[str, Any]) -> None:
    """Export what the spans of this process wait to be exported, within the timeout."""
    provider = trace.get_tracer_provider()
    force = getattr(provider, "force_flush", None)
    if force is not None:
        force(int(settings["flush_timeout"] * 1000))


class AttemptTrace:
    """What `opus_attempt_context` returns: the attempt's trace context (W3C
    `traceparent`), made current where the attempt runs, and given to its commands.

    In a process other than the engine's (a forked worker, a Dask worker) its spans are
    exported as the attempt ends: the process may end without a word (a forked task
    process exits with `os._exit`)."""

    def __init__(self, carrier: dict[str, str], settings: dict[str, Any], engine: int) -> None:
        self.carrier = carrier
        self.settings = settings
        self.engine = engine
        self._tokens: tuple[Any, Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (AttemptTrace, (self.carrier, self.settings, self.engine))

    def __enter__(self) -> AttemptTrace:
        if os.getpid() != self.engine:
            provider_for(self.settings)  # a Dask worker's first attempt sets one up
        attached = otel_context.attach(propagate.extract(self.carrier))
        environment = dict(COMMAND_ENVIRONMENT.get() or {})
        environment.update({key.upper(): value for key, value in self.carrier.items()})
        self._tokens = (attached, COMMAND_ENVIRONMENT.set(environment))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tokens is not None:
            attached, environment = self._tokens
            COMMAND_ENVIRONMENT.reset(environment)
            otel_context.detach(attached)
            self._tokens = None
        if os.getpid() != self.engine:
            with unkept():  # what exporting writes (the console's spans) is not the task's
                flush(self.settings)


class Tracing:
    """The hooks that trace runs: registered by the plugin when tracing is on (or pass one
    to `Tasks(plugins=[Tracing(settings)])`). Lifecycle hooks come one at a time from the
    engine's thread, so its maps need no lock."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.provider = provider_for(settings)
        self.tracer = self.provider.get_tracer(SCOPE, __version__)
        self.run: Span | None = None
        self.tasks: dict[str, Span] = {}
        self.attempts: dict[str, Span] = {}

    def _name(self, task: Any) -> str:
        return str(task.name or f"{task.kind}@{task.task_id[:12]}")

    @hookimpl
    def opus_run_started(self, plan: Any) -> None:
        parent = None
        if os.environ.get("TRACEPARENT"):  # opus started inside a trace (a CI job's)
            parent = propagate.extract(
                {
                    "traceparent": os.environ["TRACEPARENT"],
                    "tracestate": os.environ.get("TRACESTATE", ""),
                }
            )
        self.tasks, self.attempts = {}, {}
        self.run = self.tracer.start_span(
            f"opus run {plan.command}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "opus.command": plan.command,
                "opus.context": plan.context,
                "opus.tasks": len(plan.tasks),
            },
        )

    def _task_span(self, task: Any) -> Span:
        span = self.tasks.get(task.task_id)
        if span is None:
            meta = task.meta
            attributes: dict[str, Any] = {
                "opus.task.id": task.task_id,
                "opus.task.name": self._name(task),
                "opus.task.kind": task.kind,
                "opus.task.version": task.version,
            }
            for resource, need in (meta.resources or {}).items():
                attributes[f"opus.task.resources.{resource}"] = need
            if meta.priority:
                attributes["opus.task.priority"] = meta.priority
            parent = trace.set_span_in_context(self.run) if self.run is not None else None
            span = self.tasks[task.task_id] = self.tracer.start_span(
                f"task {self._name(task)}", context=parent, attributes=attributes
            )
        return span

    @hookimpl
    def opus_task_started(self, task: Any, attempt: int) -> None:
        span = self._task_span(task)
        self.attempts[task.task_id] = self.tracer.start_span(
            f"attempt {attempt}",
            context=trace.set_span_in_context(span),
            attributes={"opus.task.id": task.task_id, "opus.attempt": attempt},
        )

    @hookimpl
    def opus_attempt_context(self, task: Any, attempt: int, runner: Any) -> AttemptTrace | None:
        span = self.attempts.get(task.task_id)
        if span is None:
            return None
        self.tasks[task.task_id].set_attribute(
            "opus.runner", str(getattr(runner, "name", type(runner).__name__))
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return AttemptTrace(carrier, self.settings, os.getpid())

    @hookimpl
    def opus_task_retrying(
        self, task: Any, attempt: int, error: str, delay: float, traceback: str | None
    ) -> None:
        span = self.attempts.pop(task.task_id, None)
        if span is not None:
            _failed(span, "failed", error, traceback)
            span.end()
        self._task_span(task).add_event(
            "retry", {"opus.attempt": attempt, "opus.error": error, "opus.retry.delay": delay}
        )

    @hookimpl
    def opus_task_finished(self, task: Any, result: Any) -> None:
        status = str(getattr(result.status, "value", result.status))
        task_span = self._task_span(task)  # a task that never started gets one too
        attempt = self.attempts.pop(task.task_id, None)
        task_span.set_attributes({"opus.status": status, "opus.attempts": result.attempts})
        for span in (attempt, task_span):
            if span is None:
                continue
            if span is attempt:
                span.set_attribute("opus.status", status)
            if status in _ENDED:
                span.set_status(Status(StatusCode.OK))
            else:
                if status == "timed_out":
                    span.add_event("timeout", {"opus.error": result.error or ""})
                _failed(span, status, result.error, result.traceback)
        if attempt is not None:
            attempt.end()
        task_span.end()
        del self.tasks[task.task_id]

    @hookimpl
    def opus_run_finished(self, report: Any) -> None:
        run = self.run
        if run is None:
            return
        self.run = None
        if report.run_id:
            run.set_attribute("opus.run.id", report.run_id)
        for status, count in report.counts().items():
            if count:
                run.set_attribute(f"opus.run.{status}", count)
        run.set_attribute("opus.run.interrupted", bool(report.interrupted))
        if report.ok:
            run.set_status(Status(StatusCode.OK))
        else:
            run.set_status(Status(StatusCode.ERROR, report.summary()))
        run.end()
        flush(self.settings)


def _failed(span: Span, status: str, error: str | None, traceback: str | None) -> None:
    """Mark `span` as failed: ERROR status, and an `exception` event as the semantic
    conventions name its attributes (from the one-line error `Type: message`)."""
    message = error or status
    kind, _, text = message.partition(": ")
    span.set_status(Status(StatusCode.ERROR, message))
    attributes = {"exception.type": kind if text else status, "exception.message": text or message}
    if traceback:
        attributes["exception.stacktrace"] = traceback
    span.add_event("exception", attributes)
