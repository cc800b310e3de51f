"""A small ETL with function tasks that feed each other: extract -> map transform -> load.

    python examples/etl.py [RUNNER] [OUTPUT]

RUNNER is sequential, process, threadpool (the default) or dask; nothing else
changes. OUTPUT defaults to a file in a new temporary folder, so a run leaves
nothing behind in the checkout. Each reading is transformed in a run of its own, the runs start as
soon as the extract is done, and the load waits for all of them. One reading
is bad: its transform fails, and the load reports what it skipped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from opus_core import UpstreamFailedError, task, unmapped

RUNNER = sys.argv[1] if len(sys.argv) > 1 else "threadpool"


def output_file() -> Path:
    """OUTPUT, else etl-output.json in a new temporary folder (not the checkout)."""
    if len(sys.argv) > 2:
        return Path(sys.argv[2])
    return Path(tempfile.mkdtemp(prefix="opus-etl-")) / "etl-output.json"


@task(runner=RUNNER)
def extract(station: str) -> list[dict[str, object]]:
    """Readings from a station (made up here; a real one would fetch them)."""
    return [
        {"station": station, "hour": hour, "fahrenheit": 50 + 3 * hour} for hour in range(6)
    ] + [{"station": station, "hour": 6, "fahrenheit": "sensor error"}]


@task(runner=RUNNER, retries=1)
def transform(reading: dict[str, object], unit: str) -> dict[str, object]:
    """One reading in the wanted unit; a bad reading fails its own run only."""
    fahrenheit = float(reading["fahrenheit"])  # type: ignore[arg-type]
    value = round((fahrenheit - 32) * 5 / 9, 1) if unit == "celsius" else fahrenheit
    return {"station": reading["station"], "hour": reading["hour"], unit: value}


@task(runner=RUNNER)
async def load(rows: list[dict[str, object]], path: str) -> int:
    """Write the rows as JSON (async: a real load would await a database)."""
    await asyncio.sleep(0)
    Path(path).write_text(json.dumps(rows, indent=2))
    return len(rows)


def main() -> int:
    output = output_file()
    readings = extract("north")
    # How many transforms there are depends on what the extract found, so map takes the
    # list itself; every element's run then starts at once.
    rows = transform.map(readings.get_result(), unmapped("celsius"))
    good = [run for run in rows if run.wait() and run.exception() is None]
    for run in rows:
        if run.exception() is not None:
            print(f"skipped a reading: {run.exception()}")
    loaded = load(good, str(output))  # a list of runs: each is replaced by its value
    print(f"loaded {loaded.get_result()} rows into {output} on {RUNNER}")
    downstream = load([rows[-1]], str(output) + ".bad")
    try:
        downstream.get_result()
    except UpstreamFailedError as exc:
        print(f"not loaded: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
