"""The engine's rules: scope, dependencies, order, values, failures, retries, timeouts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from harness import RUNNERS

from opus_core import (
    CycleError,
    DependencyError,
    KeyValueStore,
    LoggerWrapper,
    ManifestError,
    RunFailedError,
    StatePersistance,
    StatePersistence,
    Task,
    TaskProcessor,
    Tasks,
)

# -- the seed's style ----------------------------------------------------------


class HelloWorld(TaskProcessor):
    def __init__(
        self,
        kind="HelloWorld",
        kind_versions=["v1"],
        supported_commands=["apply"],
        logger=LoggerWrapper(),
    ):
        super().__init__(kind, kind_versions, supported_commands, logger)

    def process_task(
        self,
        task,
        command,
        context="default",
        key_value_store=KeyValueStore(),
        state_persistence=StatePersistence(),
    ):
        updated = KeyValueStore()
        updated.store = copy.deepcopy(key_value_store.store)
        Path(task.spec["file"]).write_text("Hello World!")
        updated.save(key="hello_world_file", value=task.spec["file"])
        return updated


def test_seed_style_runs_unchanged(tmp_path: Path) -> None:
    values = KeyValueStore()
    values.save(key="existing", value=[1, 2])
    logger = LoggerWrapper()
    tasks = Tasks(key_value_store=values, logger=logger)
    tasks.register_task_processor(processor=HelloWorld())
    target = tmp_path / "hello.txt"
    tasks.add_task(task=Task(kind="HelloWorld", version="v1", spec={"file": str(target)}))
    report = tasks.process_context(command="apply", context="ANY")
    assert report.ok
    assert target.read_text() == "Hello World!"
    assert tasks.key_value_store is values
    assert values.store == {"existing": [1, 2], "hello_world_file": str(target)}
    assert StatePersistance is StatePersistence


def test_processor_attributes_from_the_seed_constructor() -> None:
    processor = HelloWorld()
    assert processor.kind == "HelloWorld"
    assert processor.kind_versions == ("v1",)
    assert processor.supported_commands == ("apply",)


def test_processor_without_kind_is_an_error() -> None:
    class NoKind(TaskProcessor):
        pass

    with pytest.raises(Exception, match="NoKind has no kind"):
        NoKind()


# -- errors before anything runs -------------------------------------------------


def test_task_of_unknown_kind_is_rejected_at_add_task() -> None:
    tasks = Tasks()
    with pytest.raises(ManifestError, match="'mystery'.*no processor for kind 'Mystery'"):
        tasks.add_task(Task("Mystery", "v1", metadata={"name": "mystery"}))


def test_task_of_unsupported_version_names_the_supported_ones(make_harness) -> None:
    h = make_harness()
    with pytest.raises(ManifestError, match="version 'v9'.*handles versions v1"):
        h.tasks.add_task(Task("Scripted", "v9", metadata={"name": "x"}))


def test_duplicate_names_are_rejected_at_add_task(make_harness) -> None:
    h = make_harness()
    h.add("web")
    with pytest.raises(ManifestError, match="task 'web': another task has the same name"):
        h.add("web")


def test_identical_unnamed_tasks_are_duplicates(make_harness) -> None:
    h = make_harness()
    h.add(spec={"x": 1})
    h.add(spec={"x": 2})
    with pytest.raises(ManifestError, match="identical unnamed task"):
        h.add(spec={"x": 1})


def test_missing_dependency_fails_before_anything_runs(make_harness) -> None:
    h = make_harness()
    h.add("a")
    h.add("b", dependencies=["nope"])
    with pytest.raises(
        DependencyError, match="task 'b' depends on 'nope', but no task is named 'nope'"
    ):
        h.run()
    assert h.started() == []


def test_out_of_scope_dependency_fails_before_anything_runs(make_harness) -> None:
    h = make_harness()
    h.add("a", contexts=["prod"])
    h.add("b", dependencies=["a"])
    with pytest.raises(
        DependencyError, match="'b' depends on 'a', which is not in scope .*context 'dev'"
    ):
        h.run(context="dev")
    assert h.started() == []


def test_cycle_names_its_tasks(make_harness) -> None:
    h = make_harness()
    h.add("start")
    h.add("a", dependencies=["c", "start"])
    h.add("b", dependencies=["a"])
    h.add("c", dependencies=["b"])
    with pytest.raises(CycleError) as info:
        h.run()
    assert sorted(info.value.tasks) == ["a", "b", "c"]
    assert "dependency cycle" in str(info.value)
    assert h.started() == []


def test_self_dependency_is_a_cycle(make_harness) -> None:
    h = make_harness()
    h.add("loop", dependencies=["loop"])
    with pytest.raises(CycleError, match="loop -> loop"):
        h.run()


def test_cycle_through_labels_is_detected(make_harness) -> None:
    h = make_harness()
    h.add("a", labels={"tier": "x"}, dependencies=[{"labels": {"tier": "y"}}])
    h.add("b", labels={"tier": "y"}, dependencies=["a"])
    with pytest.raises(CycleError):
        h.run()


# -- scope ------------------------------------------------------------------------


def test_contexts_and_commands_select_the_tasks_in_scope(make_harness) -> None:
    h = make_harness()
    h.add("everywhere")
    h.add("dev-only", contexts=["dev"])
    h.add("not-prod", exclude_contexts=["prod"])
    h.add("apply-only", commands=["apply"])
    h.add("never-delete", exclude_commands=["delete"])
    assert set(h.run(context="dev").results) == {
        "everywhere",
        "dev-only",
        "not-prod",
        "apply-only",
        "never-delete",
    }
    assert set(h.run(context="prod").results) == {"everywhere", "apply-only", "never-delete"}
    assert set(h.run(command="delete", context="prod").results) == {"everywhere"}


def test_commands_the_processor_does_not_support_are_out_of_scope(make_harness) -> None:
    h = make_harness()
    h.add("a")
    assert set(h.run(command="describe").results) == {"a"}
    assert len(h.run(command="teleport")) == 0


def test_plan_lists_excluded_tasks_with_reasons(make_harness) -> None:
    h = make_harness()
    h.add("a", contexts=["prod"])
    plan = h.tasks.plan("apply", "dev")
    assert plan.tasks == []
    [(task, reason)] = plan.excluded
    assert task.task_id == "a" and "context 'dev' is not in its contexts ['prod']" in reason


# -- order and dependencies --------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_tasks_run_after_their_dependencies(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add("deploy", dependencies=["build", {"labels": {"tier": "db"}}])
    h.add("build", dependencies=["fetch"])
    h.add("fetch")
    h.add("db1", labels={"tier": "db"})
    h.add("db2", labels={"tier": "db", "zone": "b"})
    h.add("other", labels={"tier": "web"})
    report = h.run()
    assert report.ok
    ends = {e["task"]: e["t"] for e in h.processor.events() if e["event"] == "end"}
    starts = {e["task"]: e["t"] for e in h.processor.events() if e["event"] == "start"}
    assert starts["build"] >= ends["fetch"]
    for dep in ("build", "db1", "db2"):
        assert starts["deploy"] >= ends[dep]
    order = list(report.results)  # the plan's: each task after what it needs
    assert order.index("fetch") < order.index("build") < order.index("deploy")
    assert max(order.index("db1"), order.index("db2")) < order.index("deploy")


def test_label_selector_needs_every_label(make_harness) -> None:
    h = make_harness()
    h.add("a", labels={"tier": "db", "zone": "a"}, spec={"publish": {"a": 1}})
    h.add("b", labels={"tier": "db", "zone": "b"}, spec={"publish": {"b": 1}})
    h.add("c", dependencies=[{"labels": {"tier": "db", "zone": "b"}}])
    assert h.tasks.plan().deps[[t.task_id for t in h.tasks.plan().tasks].index("c")] != []
    h.run()
    assert h.seen("c") == {"b": 1}


def test_label_dependency_matching_nothing_is_no_dependency(make_harness) -> None:
    h = make_harness()
    h.add("a", dependencies=[{"labels": {"tier": "nothing"}}])
    assert h.run().ok


def test_label_dependency_ignores_out_of_scope_matches(make_harness) -> None:
    h = make_harness()
    h.add("db", labels={"tier": "db"}, contexts=["prod"])
    h.add("web", dependencies=[{"labels": {"tier": "db"}}])
    assert set(h.run(context="dev").results) == {"web"}


def test_a_task_does_not_depend_on_itself_through_its_own_labels(make_harness) -> None:
    h = make_harness()
    h.add("a", labels={"tier": "web"}, dependencies=[{"labels": {"tier": "web"}}])
    h.add("b", labels={"tier": "web"}, dependencies=[{"labels": {"tier": "web"}}])
    with pytest.raises(CycleError):  # a needs b and b needs a
        h.run()


# -- values --------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_task_sees_start_values_and_what_its_ancestors_published(make_harness, runner: str) -> None:
    h = make_harness(runner, key_value_store=KeyValueStore({"region": "eu"}))
    h.add("root", spec={"publish": {"root": 1}})
    h.add("mid", dependencies=["root"], spec={"publish": {"mid": 2}})
    h.add("leaf", dependencies=["mid"], spec={"publish": {"leaf": 3}})
    h.add("sibling", spec={"publish": {"sibling": 4}})
    report = h.run()
    assert report.ok
    assert h.seen("root") == {"region": "eu"}
    assert h.seen("leaf") == {"region": "eu", "root": 1, "mid": 2}
    assert "sibling" not in h.seen("leaf")
    assert h.tasks.key_value_store.store == {
        "region": "eu",
        "root": 1,
        "mid": 2,
        "leaf": 3,
        "sibling": 4,
    }


@pytest.mark.parametrize("runner", RUNNERS)
def test_downstream_value_overrides_upstream_in_a_diamond(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add("a", spec={"publish": {"x": "a"}})
    h.add("b", dependencies=["a"], spec={"publish": {"x": "b"}, "sleep": 0.05})
    h.add("c", dependencies=["a"])
    h.add("d", dependencies=["c", "b"])
    h.run()
    assert h.seen("d") == {"x": "b"}


def test_unchanged_values_in_a_returned_store_are_not_republished(make_harness) -> None:
    class CopyAll(TaskProcessor):
        kind = "CopyAll"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            store = KeyValueStore(copy.deepcopy(key_value_store.store))
            store.save(task.task_id, True)
            return store

    h = make_harness()
    h.tasks.register_task_processor(CopyAll())
    h.add("a", spec={"publish": {"x": "from a"}})
    h.tasks.add_task(Task("CopyAll", "v1", metadata={"name": "late", "dependencies": ["a"]}))
    h.add("b", dependencies=["a"], spec={"publish": {"x": "from b"}})
    h.add("end", dependencies=["late", "b"])
    h.run()
    assert h.seen("end") == {"x": "from b", "late": True}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, True),
        (2, 2.0),
        ([1, 2], (1, 2)),
        ({"k": [1]}, {"k": [True]}),
        ({1, 2}, frozenset({1, 2})),
    ],
)
def test_a_value_that_changes_type_is_published_even_when_equal(
    make_harness, before, after
) -> None:
    class Replace(TaskProcessor):
        kind = "Replace"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return {"x": after}

    class Look(TaskProcessor):
        kind = "Look"
        seen: list = []

        def process_task(self, task, command, context, key_value_store, state_persistence):
            Look.seen.append(key_value_store.store["x"])
            return {}

    h = make_harness()
    h.tasks.key_value_store.save("x", before)
    h.tasks.register_task_processor(Replace())
    h.tasks.register_task_processor(Look())
    h.tasks.add_task(Task("Replace", "v1", metadata={"name": "replace"}))
    h.tasks.add_task(Task("Look", "v1", metadata={"name": "look", "dependencies": ["replace"]}))
    assert h.run().ok
    assert Look.seen == [after] and type(Look.seen[0]) is type(after)


@pytest.mark.parametrize("runner", RUNNERS)
def test_placeholders_are_filled_from_published_values(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add("db", spec={"publish": {"host": "db.local", "port": 5432, "tags": ["a"]}})
    h.add(
        "web",
        dependencies=["db"],
        spec={
            "url": "postgres://${host}:${port}",
            "port": "${port}",
            "nested": ["${tags}"],
            "literal": "$${host}",
        },
    )
    assert h.run().ok
    assert h.event("web", "start")["spec"] == {
        "url": "postgres://db.local:5432",
        "port": 5432,
        "nested": [["a"]],
        "literal": "${host}",
    }


def test_missing_placeholder_fails_the_task_naming_the_key(make_harness) -> None:
    h = make_harness()
    h.add("web", spec={"url": "${nobody_published_this}"})
    h.add("after", dependencies=["web"])
    h.add("unrelated")
    report = h.run()
    assert report["web"].status == "failed"
    assert "nobody_published_this" in report["web"].error and "'web'" in report["web"].error
    assert report["after"].status == "skipped"
    assert report["unrelated"].status == "succeeded"
    assert "web" not in h.started()


# -- failures, retries, timeouts -------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_failed_task_skips_its_dependents_and_the_rest_go_on(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add("bad", spec={"fail": "disk on fire"})
    h.add("child", dependencies=["bad"])
    h.add("grandchild", dependencies=["child"])
    h.add("independent")
    h.add("after-independent", dependencies=["independent"])
    report = h.run()
    assert not report.ok
    assert report["bad"].status == "failed" and "disk on fire" in report["bad"].error
    assert report["bad"].error.startswith("RuntimeError")
    assert report["child"].status == report["grandchild"].status == "skipped"
    assert "'bad'" in report["child"].error
    assert report["independent"].status == report["after-independent"].status == "succeeded"
    assert set(h.started()) == {"bad", "independent", "after-independent"}
    with pytest.raises(RunFailedError, match="disk on fire"):
        report.raise_on_failure()


def test_fail_fast_starts_nothing_new_after_a_failure(make_harness) -> None:
    h = make_harness(fail_fast=True)
    h.add("first")
    h.add("bad", spec={"fail": "boom"})
    h.add("later-1")
    h.add("later-2")
    report = h.run()
    assert h.started() == ["first", "bad"]
    assert report["later-1"].status == report["later-2"].status == "skipped"
    assert "fail_fast" in report["later-1"].error


@pytest.mark.parametrize("runner", RUNNERS)
def test_retries_rerun_a_failed_task_after_the_sleep(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add(
        "flaky", spec={"fail_attempts": 2, "publish": {"ok": True}}, retries=2, retry_sleep_time=0.2
    )
    h.add("after", dependencies=["flaky"])
    report = h.run()
    assert report["flaky"].status == "succeeded" and report["flaky"].attempts == 3
    starts = [
        e["t"] for e in h.processor.events() if e["task"] == "flaky" and e["event"] == "start"
    ]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.2 and starts[2] - starts[1] >= 0.2
    assert h.seen("after") == {"ok": True}


def test_retries_run_out(make_harness) -> None:
    h = make_harness()
    h.add("flaky", spec={"fail_attempts": 5}, retries=1)
    report = h.run()
    assert report["flaky"].status == "failed" and report["flaky"].attempts == 2
    assert "failed attempt 2" in report["flaky"].error


def test_retry_sleep_does_not_block_other_tasks(make_harness) -> None:
    h = make_harness()
    h.add("flaky", spec={"fail_attempts": 1}, retries=1, retry_sleep_time=0.3)
    h.add("other")
    h.run()
    assert h.started() == ["flaky", "other", "flaky"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_timeout_ends_the_task_and_skips_dependents(make_harness, runner: str) -> None:
    h = make_harness(runner)
    h.add("slow", spec={"sleep": 5}, timeout=0.3, retries=3)
    h.add("after", dependencies=["slow"])
    h.add("fine")
    report = h.run()
    # ended, not waited for: the run was over before the task's five seconds were
    assert [e for e in h.processor.events() if e["event"] == "end" and e["task"] == "slow"] == []
    assert report["slow"].status == "timed_out" and report["slow"].attempts == 1
    assert "timed out after 0.3s" in report["slow"].error
    assert report["after"].status == "skipped"
    assert report["fine"].status == "succeeded"


def test_report_counts_and_summary(make_harness) -> None:
    h = make_harness()
    h.add("a")
    h.add("b", spec={"fail": "x"})
    h.add("c", dependencies=["b"])
    report = h.run()
    assert report.counts() == {
        "succeeded": 1,
        "failed": 1,
        "skipped": 1,
        "timed_out": 0,
        "cancelled": 0,
        "restored": 0,
    }
    assert report.summary().startswith("1 succeeded, 1 failed, 1 skipped")
    assert report.with_status("skipped") == ["c"]


# -- scale -----------------------------------------------------------------------------


@pytest.mark.slow  # a hundred thousand tasks
def test_a_100000_task_graph_runs_to_completion() -> None:
    class Noop(TaskProcessor):
        kind = "Noop"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            return None

    tasks = Tasks(logger=LoggerWrapper("WARNING"))
    tasks.register_task_processor(Noop())
    half = 50_000
    for i in range(half):  # a chain
        deps = [f"c{i - 1}"] if i else []
        tasks.add_task(Task("Noop", "v1", metadata={"name": f"c{i}", "dependencies": deps}))
    for i in range(half - 1):  # a wide layer
        tasks.add_task(Task("Noop", "v1", metadata={"name": f"w{i}", "labels": {"layer": "wide"}}))
    tasks.add_task(
        Task(
            "Noop",
            "v1",
            metadata={
                "name": "fan-in",
                "dependencies": [{"labels": {"layer": "wide"}}, f"c{half - 1}"],
            },
        )
    )
    report = tasks.process_context()
    assert len(report) == 100_000 and report.ok
    assert list(report.results)[-1] == "fan-in"


def test_garbage_cycles_made_by_tasks_of_a_large_run_are_collected_after_it() -> None:
    import gc
    import weakref

    class Node:
        pass

    made: list[weakref.ref] = []

    class Cyclic(TaskProcessor):
        kind = "Cyclic"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            node = Node()
            node.me = node  # garbage only the cyclic collector can free
            made.append(weakref.ref(node))

    tasks = Tasks(logger=LoggerWrapper("WARNING"))
    tasks.register_task_processor(Cyclic())
    for i in range(25_000):  # large enough that the run sets what it holds aside
        tasks.add_task(Task("Cyclic", "v1", metadata={"name": f"t{i}"}))
    assert tasks.process_context().ok
    assert len(made) == 25_000
    gc.collect()
    assert sum(ref() is not None for ref in made) == 0


def test_logger_methods_take_logging_style_arguments(capsys) -> None:
    logger = LoggerWrapper("DEBUG")
    logger.info("%d rows from %s", 3, "orders.csv")
    logger.warn("%s", "seed spelling")
    logger.error("100% plain")  # no arguments: the message is left as it is
    out = capsys.readouterr().out
    assert "3 rows from orders.csv" in out and "seed spelling" in out and "100% plain" in out


# -- how many run now ------------------------------------------------------------


def test_running_counts_the_task_under_way_and_is_zero_between_runs() -> None:
    seen: list[int] = []

    class Counts(TaskProcessor):
        kind = "Counts"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            seen.append(engine.running())
            return {}

    engine = Tasks(logger=LoggerWrapper("ERROR"))
    engine.register_task_processor(Counts)
    for name in ("a", "b"):
        engine.add_task(Task("Counts", "v1", metadata={"name": name}))
    assert engine.running() == 0
    assert engine.process_context().ok
    assert seen == [1, 1] and engine.running() == 0


def test_finished_counts_the_ended_tasks_and_those_that_failed_or_timed_out() -> None:
    seen: list[tuple[int, int]] = []

    class Counts(TaskProcessor):
        kind = "Counts"

        def process_task(self, task, command, context, key_value_store, state_persistence):
            seen.append(engine.finished())
            if task.spec.get("fail"):
                raise RuntimeError("no")
            return {}

    engine = Tasks(logger=LoggerWrapper("CRITICAL"))
    engine.register_task_processor(Counts)
    engine.add_task(Task("Counts", "v1", metadata={"name": "a"}, spec={"fail": True}))
    engine.add_task(Task("Counts", "v1", metadata={"name": "b", "dependencies": ["a"]}))
    engine.add_task(Task("Counts", "v1", metadata={"name": "c"}))
    engine.add_task(Task("Counts", "v1", metadata={"name": "d", "dependencies": ["c"]}))
    assert engine.finished() == (0, 0)
    assert not engine.process_context().ok
    # a fails (its dependent b is skipped at once), then c and d run
    assert seen == [(0, 0), (2, 1), (3, 1)] and engine.finished() == (0, 0)
