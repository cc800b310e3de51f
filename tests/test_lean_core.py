"""What keeps a large run lean, checked as behaviour: records, history and results made when
read, the same as when they were kept whole; log lines that skip `logging`'s machinery write
exactly what it would; and a finished run holds no object per task for the collector."""

from __future__ import annotations

import gc
import logging
import pickle
import re
import sys

from opus_core import LoggerWrapper, StatePersistence, Task, TaskProcessor, Tasks
from opus_core.manifest import NO_ENTRIES


class Publish(TaskProcessor):
    kind = "Publish"

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        if task.spec.get("fail"):
            raise RuntimeError("no")
        return {task.task_id: task.spec.get("value", 1)}


def engine(n: int, persistence: StatePersistence | None = None, fail: int = -1) -> Tasks:
    quiet = LoggerWrapper("ERROR")
    tasks = Tasks(logger=quiet, state_persistence=persistence, runner="sequential")
    tasks.register_task_processor(Publish(logger=quiet))
    for i in range(n):
        deps = [f"t{i - 1}"] if i % 3 else []
        spec = {"fail": True} if i == fail else {"value": i}
        tasks.add_task(
            Task("Publish", "v1", spec=spec, metadata={"name": f"t{i}", "dependencies": deps})
        )
    return tasks


def test_records_of_a_later_run_replace_the_earlier_ones_and_the_rest_stay() -> None:
    persistence = StatePersistence()
    assert engine(6, persistence, fail=4).process_context().ok is False
    first = persistence.get_object_state("opus-run:apply:default:t4")
    assert first["status"] == "failed" and first["error"] == "RuntimeError: no"
    assert persistence.get_object_state("opus-run:apply:default:t5") == {}  # never attempted
    assert persistence.get_object_state("opus-run:apply:default:t3")["published"] == {"t3": 3}

    again = Tasks(logger=LoggerWrapper("ERROR"), state_persistence=persistence)
    again.register_task_processor(Publish(logger=LoggerWrapper("ERROR")))
    again.add_task(Task("Publish", "v1", spec={"value": 40}, metadata={"name": "t4"}))
    assert again.process_context().ok
    assert persistence.get_object_state("opus-run:apply:default:t4")["published"] == {"t4": 40}
    assert persistence.get_object_state("opus-run:apply:default:t3")["published"] == {"t3": 3}
    records = {
        key: state
        for key, state in persistence.retrieve_all_state_from_persistence().items()
        if key.startswith("opus-run:")
    }
    assert len(records) == 5  # t5 was skipped: never attempted, so never recorded
    assert records["opus-run:apply:default:t4"]["status"] == "succeeded"

    assert persistence.delete_object_state("opus-run:apply:default:t3")
    assert persistence.get_object_state("opus-run:apply:default:t3") == {}
    persistence.save_object_state("opus-run:apply:default:t0", {"record": "mine"})
    assert persistence.get_object_state("opus-run:apply:default:t0") == {"record": "mine"}


def test_resume_reads_the_records_of_the_last_run_in_memory() -> None:
    persistence = StatePersistence()
    assert engine(9, persistence).process_context().ok
    report = engine(9, persistence).process_context(resume=True)
    assert report.with_status("restored") == [f"t{i}" for i in range(9)]  # file order


def test_the_report_and_the_history_read_the_same_as_before() -> None:
    persistence = StatePersistence()
    tasks = engine(5, persistence, fail=1)
    report = tasks.process_context()
    assert list(report.results) == ["t0", "t1", "t2", "t3", "t4"]
    assert report["t1"].status == "failed" and report["t1"].traceback
    assert report["t2"].status == "skipped" and report["t2"].attempts == 0
    assert "t9" not in report.results and "t3" in report.results
    assert report.counts()["skipped"] == 1 and report.with_status("failed") == ["t1"]
    run = persistence.load_run(report.run_id or "")
    assert run is not None and isinstance(run["tasks"], list)
    by_name = {entry["name"]: entry for entry in run["tasks"]}
    assert by_name["t1"]["dependencies"] == ["t0"]
    assert [a["status"] for a in by_name["t1"]["attempt_log"]] == ["failed"]
    assert by_name["t2"]["attempt_log"] == [] and by_name["t2"]["started_at"] is None


def test_a_task_without_labels_shares_one_read_only_mapping_that_pickles_as_itself() -> None:
    task = Task("Publish", "v1", metadata={"name": "a"})
    assert task.meta.labels is NO_ENTRIES and task.spec == {}
    copy = pickle.loads(pickle.dumps(task))
    assert copy.meta.labels is NO_ENTRIES and copy.task_id == "a"
    assert copy.checksum == task.checksum
    try:
        task.meta.labels["tier"] = "web"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("the shared mapping took a key")


def test_a_log_line_is_the_line_logging_writes(capsys) -> None:  # type: ignore[no-untyped-def]
    logger = LoggerWrapper("INFO")
    logger.info("100%% done, %s", "really")
    out = capsys.readouterr().out
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    100% done, really\n", out), out
    # A handler of the user's on the "opus" logger gets the records too.
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logging.getLogger("opus").addHandler(handler)
    try:
        logger.warning("careful")
    finally:
        logging.getLogger("opus").removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["careful"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING careful\n", capsys.readouterr().out)


def test_a_finished_run_holds_no_object_per_task_for_the_collector() -> None:
    n = 3000
    tasks = engine(n, StatePersistence())
    gc.collect()
    before = len(gc.get_objects())
    report = tasks.process_context()
    assert report.ok
    gc.collect()
    held = len(gc.get_objects()) - before
    # The published values and the views tasks saw are kept (a dict and a tuple per task
    # here, since every task publishes); nothing else per task: no result, record, history
    # entry or list of dependencies.
    assert held < 3 * n, held
    assert sys.getrefcount(report) >= 2
