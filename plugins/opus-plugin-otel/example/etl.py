"""The shop's processors, each opening spans of its own (children of its attempt's)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from opentelemetry import trace

from opus_core import TaskProcessor

tracer = trace.get_tracer("shop")


def amount(row: dict[str, str]) -> float:
    return int(row["qty"]) * float(row["unit_price"])


class Load(TaskProcessor):
    kind = "Load"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span("read csv") as span:
            with open(task.spec["file"], newline="") as f:
                rows = list(csv.DictReader(f))
            time.sleep(0.02)  # a slower disk
            span.set_attribute("rows", len(rows))
        self.logger.info(f"read {len(rows)} rows from {task.spec['file']}")
        return {task.spec["publish"]: rows}


class Total(TaskProcessor):
    kind = "Total"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        tries = Path(task.spec["flaky"])  # the first attempt of each run loses its connection
        tries.parent.mkdir(exist_ok=True)
        with tries.open("a") as tally:
            tally.write(".")
        if len(tries.read_text()) % 2:
            with tracer.start_as_current_span("connect to the till"):
                time.sleep(0.01)
                raise ConnectionError("the till went away")
        totals: dict[str, float] = {}
        with tracer.start_as_current_span("sum orders"):
            for row in task.spec["rows"]:
                totals[row["customer"]] = totals.get(row["customer"], 0) + amount(row)
            time.sleep(0.01)
        return {"totals": totals}


class Report(TaskProcessor):
    kind = "Report"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        names = {c["id"]: c["name"] for c in key_value_store.store["customers"]}
        with tracer.start_as_current_span("write report"):
            Path(task.spec["output"]).parent.mkdir(exist_ok=True)
            with open(task.spec["output"], "w") as f:
                for customer, total in sorted(key_value_store.store["totals"].items()):
                    f.write(f"{names[customer]}: {total:.2f}\n")
        return {}
