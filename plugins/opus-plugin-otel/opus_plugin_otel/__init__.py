"""The `otel` plugin: OpenTelemetry traces of opus runs — a span per run, per task and per
attempt, and the attempt's trace context carried into the work on every runner, so that a
span user code opens inside a task is a child of that task's attempt.

Off until asked for: `[plugins.otel] enabled = true`, or (with `enabled` unset) the
standard `OTEL_TRACES_EXPORTER` environment variable set to an exporter. Until then
OpenTelemetry is not imported and no hook of it runs per task: this module only reads its
options, and registers `opus_plugin_otel.tracing.Tracing` — the hooks that trace — on the
run's plugin manager when tracing is on.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from opus_core import hookimpl

__version__ = "0.1.0"

EXPORTERS = ("otlp", "console", "none")
"""What `exporter` (or `OTEL_TRACES_EXPORTER`) may name."""

PROTOCOLS = ("http/protobuf", "grpc")
"""What `protocol` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`)
may name for the `otlp` exporter."""


class Options:
    """`[plugins.otel]`: each option unset falls back to the standard `OTEL_*` variable.

    * `enabled`: trace runs (`true`), or not (`false`); unset: when
      `OTEL_TRACES_EXPORTER` names an exporter (not `none`);
    * `exporter`: `otlp` (the default), `console` (spans as JSON on stderr when the run
      ends) or `none` (spans made, not exported), or several with commas;
      `OTEL_TRACES_EXPORTER`;
    * `protocol`: `http/protobuf` (the default) or `grpc` (needs the `grpc` extra);
      `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`;
    * `endpoint`: the collector, as `OTEL_EXPORTER_OTLP_ENDPOINT` (for HTTP the base URL,
      `/v1/traces` is added); unset, the exporter reads the `OTEL_EXPORTER_OTLP_*`
      variables itself (default `http://localhost:4318`);
    * `service_name`: the `service.name` of the spans; `OTEL_SERVICE_NAME`, else "opus";
    * `flush_timeout`: seconds the end of a run waits for its spans to be exported.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        exporter: str | None = None,
        protocol: str | None = None,
        endpoint: str | None = None,
        service_name: str | None = None,
        flush_timeout: float = 5.0,
    ) -> None:
        if exporter is not None:
            exporters_named(exporter, "exporter")
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if not flush_timeout >= 0 or flush_timeout == float("inf"):
            raise ValueError(f"flush_timeout must be a number of seconds, got {flush_timeout!r}")
        self.enabled = enabled
        self.exporter = exporter
        self.protocol = protocol
        self.endpoint = endpoint
        self.service_name = service_name
        self.flush_timeout = flush_timeout


def exporters_named(text: str, where: str) -> list[str]:
    """The exporters a comma-separated `text` names (any case), checked; `where` says where
    it came from, for the error."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in EXPORTERS]
    if wrong or not names:
        raise ValueError(
            f"{where} must name {', '.join(EXPORTERS)} (or several, with commas), got {text!r}"
        )
    return [name for name in names if name != "none"]


def settings(options: Options, environ: Any = os.environ) -> dict[str, Any]:
    """What tracing runs with: the options, each unset one from the `OTEL_*` variables; a
    plain dict, since it travels with each attempt to the processes that run it. A value
    that names nothing known is a `ValueError` naming the option or variable."""
    if options.exporter is not None:
        exporters = exporters_named(options.exporter, "exporter")
    else:
        exporters = exporters_named(
            environ.get("OTEL_TRACES_EXPORTER") or "otlp", "OTEL_TRACES_EXPORTER"
        )
    protocol, where = options.protocol, "protocol"
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if protocol is None and environ.get(variable):
            protocol, where = environ[variable].strip().lower(), variable
    protocol = protocol or "http/protobuf"
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where} must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "grpc" and "otlp" in exporters and not _installed(GRPC_EXPORTER):
        raise ValueError(
            "the otlp exporter over grpc needs opentelemetry-exporter-otlp-proto-grpc: "
            "pip install 'opus-plugin-otel[grpc]', or set protocol = \"http/protobuf\""
        )
    return {
        "exporters": exporters,
        "protocol": protocol,
        "endpoint": options.endpoint,
        "service_name": options.service_name or environ.get("OTEL_SERVICE_NAME") or "opus",
        "flush_timeout": options.flush_timeout,
    }


GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def enabled(options: Options, environ: Any = os.environ) -> bool:
    """Whether runs are traced: `enabled`, or with it unset, whether `OTEL_TRACES_EXPORTER`
    names an exporter (and `OTEL_SDK_DISABLED` is not `true`)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if options.enabled is not None:
        return options.enabled
    return environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() not in ("", "none")


@hookimpl
def opus_plugin_options() -> type[Options]:
    return Options


@hookimpl
def opus_configure(options: Options, manager: Any) -> None:
    if not enabled(options):
        return
    try:
        resolved = settings(options)
    except ValueError as exc:
        if options.enabled is None:  # on only because of the environment: it does not stop opus
            sys.stderr.write(f"opus: warning: otel: {exc}; runs are not traced\n")
            return
        raise
    from opus_plugin_otel.tracing import Tracing  # OpenTelemetry is imported here, not before

    manager.register(Tracing(resolved), name="otel.tracing")
