"""Bringing the log lines tasks write on the workers back to the driver's log.

`ForwardLogs` is a Dask worker plugin in the manner of `Client.forward_logging`:
a handler on the worker's root logger and on its `opus` logger publishes each
record as an event on a topic the driver subscribes to (`replay` hands it to
the driver's logger of the same name). Unlike `Client.forward_logging` it
forwards only what this driver's tasks log, known by their keys, so several
opus runs sharing one cluster each see their own lines.

On the worker the `opus` logger passes every level on (as it does in the
driver), leaving the filtering to the `LoggerWrapper` each processor carries,
which keeps the driver's level. Other loggers keep the worker's levels (root:
WARNING unless configured), as they would in a process of one's own. Lines a
task logs from a thread it started itself are not forwarded (the worker cannot
tell whose they are), nor is anything when the worker runs in the driver's own
process (a `LocalCluster(processes=False)`), whose loggers are the driver's.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from opus_plugin_dask.process import PROCESS_TOKEN

_PLAIN = (str, int, float, bool, type(None))


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What travels of a record: its attributes, message formatted, nothing that
    msgpack could not carry (as `logging.handlers.SocketHandler` prepares one)."""
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    fields: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in ("args", "exc_info", "message"):
            continue
        fields[key] = value if isinstance(value, _PLAIN) else str(value)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    return fields


class _Forwarder(logging.Handler):
    """Publishes the records of this driver's tasks on the driver's topic."""

    def __init__(self, worker: Any, topic: str, tag: str, skip_opus: bool) -> None:
        super().__init__()
        self.worker = worker
        self.topic = topic
        self.tag = tag
        self.skip_opus = skip_opus  # on the root logger: `opus` records have their own handler

    def emit(self, record: logging.LogRecord) -> None:
        if self.skip_opus and (record.name == "opus" or record.name.startswith("opus.")):
            return
        key = self.worker.active_threads.get(threading.get_ident())
        if not isinstance(key, str) or self.tag not in key:
            return  # not a task, or another client's
        try:
            self.worker.log_event(self.topic, _record_fields(record))
        except Exception:
            self.handleError(record)


class ForwardLogs(WorkerPlugin):
    """A worker plugin forwarding the log records of the tasks whose keys contain `tag`."""

    def __init__(self, topic: str, tag: str) -> None:
        self.topic = topic
        self.tag = tag
        self.driver = PROCESS_TOKEN
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def setup(self, worker: Any) -> None:
        """Attach the handlers (unless this worker runs in the driver's process)."""
        if self.driver == PROCESS_TOKEN:
            return
        opus = logging.getLogger("opus")
        if opus.level == logging.NOTSET:
            opus.setLevel(logging.DEBUG)  # as in the driver: each LoggerWrapper filters
        for logger, skip_opus in ((logging.getLogger(), True), (opus, False)):
            handler = _Forwarder(worker, self.topic, self.tag, skip_opus)
            logger.addHandler(handler)
            self.handlers.append((logger, handler))

    def teardown(self, worker: Any) -> None:
        """Detach the handlers."""
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
        self.handlers.clear()


def replay(event: tuple[float, dict[str, Any]]) -> None:
    """On the driver: hand a forwarded record to the logger of its name."""
    _, fields = event
    record = logging.makeLogRecord(fields)
    logging.getLogger(record.name).handle(record)
