"""Planning, on its own: `opus_core.graph.build_plan` and what it builds on.

Scope (which tasks run for a command and context, and why the others do not), the
dependencies resolved by name and by labels, the topological order, and the errors
that stop a bad graph before anything runs: a missing or out-of-scope dependency, a
cycle named along its tasks.
"""

from __future__ import annotations

from typing import Any

import pytest

from opus_core import CycleError, DependencyError, Task, TaskProcessor
from opus_core.graph import Adjacency, Plan, build_plan, close_over_dependencies


class Deploy(TaskProcessor):
    kind = "Deploy"
    commands = ("apply", "delete")

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {}


class Report(TaskProcessor):
    kind = "Report"
    versions = ("v1", "v2")
    commands = ("apply",)

    def process_task(self, task, command, context, key_value_store, state_persistence):  # type: ignore[no-untyped-def]
        return {}


PROCESSORS: dict[tuple[str, str], TaskProcessor] = {
    ("Deploy", "v1"): Deploy(),
    ("Report", "v1"): Report(),
    ("Report", "v2"): Report(),
}


def deploy(name: str, **metadata: Any) -> Task:
    return Task(kind="Deploy", version="v1", metadata={"name": name, **metadata})


def plan(*tasks: Task, command: str = "apply", context: str = "default") -> Plan:
    return build_plan(list(tasks), PROCESSORS, command, context)


def names(plan: Plan) -> list[str]:
    return [task.task_id for task in plan.tasks]


def edges(plan: Plan) -> dict[str, list[str]]:
    """Each task's dependencies, by name."""
    return {
        task.task_id: [plan.tasks[j].task_id for j in plan.deps[i]]
        for i, task in enumerate(plan.tasks)
    }


# -- order --------------------------------------------------------------------------------------


def test_without_dependencies_the_order_is_the_order_of_addition() -> None:
    built = plan(deploy("c"), deploy("a"), deploy("b"))
    assert names(built) == ["c", "a", "b"]
    assert list(built.deps) == [(), (), ()] and list(built.dependents) == [(), (), ()]
    assert (built.command, built.context, built.excluded, built.warnings) == (
        "apply",
        "default",
        [],
        [],
    )


def test_dependencies_come_first_and_the_earliest_added_ready_task_next() -> None:
    built = plan(
        deploy("c", dependencies=["b"]),
        deploy("b", dependencies=["a"]),
        deploy("a"),
        deploy("d"),
    )
    assert names(built) == ["a", "b", "c", "d"]
    assert edges(built) == {"a": [], "b": ["a"], "c": ["b"], "d": []}


def test_tasks_added_after_what_they_depend_on_keep_their_order() -> None:
    built = plan(
        deploy("fetch"),
        deploy("clean", dependencies=["fetch"]),
        deploy("lint"),
        deploy("report", dependencies=["clean", "lint"]),
        deploy("other"),
    )
    assert names(built) == ["fetch", "clean", "lint", "report", "other"]
    assert edges(built) == {
        "fetch": [],
        "clean": ["fetch"],
        "lint": [],
        "report": ["clean", "lint"],
        "other": [],
    }


def test_one_task_added_before_what_it_needs_moves_only_past_it() -> None:
    built = plan(deploy("a"), deploy("b", dependencies=["d"]), deploy("c"), deploy("d"))
    assert names(built) == ["a", "c", "d", "b"]


def test_dependents_are_the_dependencies_reversed() -> None:
    built = plan(
        deploy("join", dependencies=["left", "right"]),
        deploy("left", dependencies=["root"]),
        deploy("right", dependencies=["root"]),
        deploy("root"),
    )
    assert names(built) == ["root", "left", "right", "join"]
    dependents = {
        task.task_id: [built.tasks[j].task_id for j in built.dependents[i]]
        for i, task in enumerate(built.tasks)
    }
    assert dependents == {
        "root": ["left", "right"],
        "left": ["join"],
        "right": ["join"],
        "join": [],
    }


def test_every_dependency_comes_before_its_dependent_in_a_deep_graph() -> None:
    # Added backwards, each of fifty depending on the two after it.
    tasks = [
        deploy(f"t{i}", dependencies=[f"t{j}" for j in (i + 1, i + 2) if j < 50]) for i in range(50)
    ]
    built = plan(*tasks)
    position = {name: k for k, name in enumerate(names(built))}
    assert len(position) == 50
    for name, deps in edges(built).items():
        assert all(position[dep] < position[name] for dep in deps), name


def test_a_dependency_named_twice_or_also_matched_by_labels_is_one_edge() -> None:
    built = plan(
        deploy("db", labels={"tier": "data"}),
        deploy("app", dependencies=["db", "db", {"labels": {"tier": "data"}}]),
    )
    assert edges(built)["app"] == ["db"]


# -- dependencies by labels ----------------------------------------------------------------------


def test_a_label_selector_depends_on_every_task_with_all_its_labels_but_itself() -> None:
    built = plan(
        deploy("eu-web", labels={"region": "eu", "tier": "web"}),
        deploy("us-web", labels={"region": "us", "tier": "web"}),
        deploy("eu-db", labels={"region": "eu", "tier": "data"}),
        deploy(
            "eu-check",
            labels={"region": "eu", "tier": "web"},
            dependencies=[{"labels": {"region": "eu", "tier": "web"}}],
        ),
        deploy("all-web", dependencies=[{"labels": {"tier": "web"}}]),
    )
    assert edges(built)["eu-check"] == ["eu-web"]  # not us-web, not eu-db, not itself
    assert sorted(edges(built)["all-web"]) == ["eu-check", "eu-web", "us-web"]
    assert built.warnings == []


def test_a_label_selector_that_matches_no_task_is_a_warning_not_an_error() -> None:
    built = plan(
        deploy("web", labels={"tier": "web"}),
        deploy("x", dependencies=[{"labels": {"tier": "wbe"}}]),
    )
    assert edges(built)["x"] == []
    assert built.warnings == [
        "task 'x' depends on every task labelled {labels = {tier = \"wbe\"}}, but no task has "
        "the label "
        "tier=wbe: it orders nothing (misspelt?)"
    ]


def test_a_label_only_out_of_scope_tasks_carry_is_no_edge_and_no_warning() -> None:
    built = plan(
        deploy("prod-db", labels={"tier": "data"}, contexts=["prod"]),
        deploy("app", dependencies=[{"labels": {"tier": "data"}}]),
    )
    assert names(built) == ["app"] and edges(built)["app"] == []
    assert built.warnings == []  # the label exists: only not in this scope


# -- scope ---------------------------------------------------------------------------------------


def test_scope_keeps_what_runs_for_the_command_and_context_and_says_why_not_for_the_rest() -> None:
    built = plan(
        deploy("everywhere"),
        deploy("prod-only", contexts=["prod"]),
        deploy("not-in-dev", exclude_contexts=["dev"]),
        deploy("deletes-too", commands=["apply", "delete"]),
        deploy("applies-only", commands=["apply"]),
        deploy("never-deleted", exclude_commands=["delete"]),
        Task(kind="Report", version="v2", metadata={"name": "report"}),
        command="delete",
        context="dev",
    )
    assert names(built) == ["everywhere", "deletes-too"]
    assert [(task.task_id, why) for task, why in built.excluded] == [
        ("prod-only", "context 'dev' is not in its contexts ['prod']"),
        ("not-in-dev", "context 'dev' is in its exclude_contexts"),
        ("applies-only", "command 'delete' is not in its commands ['apply']"),
        ("never-deleted", "command 'delete' is in its exclude_commands"),
        ("report", "its processor Report does not support command 'delete'"),
    ]


def test_the_same_tasks_in_another_context_make_another_plan() -> None:
    tasks = [deploy("base"), deploy("prod-only", contexts=["prod"], dependencies=["base"])]
    assert names(plan(*tasks, context="prod")) == ["base", "prod-only"]
    assert names(plan(*tasks, context="dev")) == ["base"]


def test_nothing_in_scope_is_an_empty_plan() -> None:
    built = plan(deploy("prod-only", contexts=["prod"]), context="dev")
    assert built.tasks == [] and len(built.deps) == 0
    assert [task.task_id for task, _ in built.excluded] == ["prod-only"]


# -- what stops a plan ------------------------------------------------------------------------------


def test_a_dependency_on_an_out_of_scope_task_names_both_scopes() -> None:
    with pytest.raises(DependencyError) as raised:
        plan(deploy("db", contexts=["prod"]), deploy("app", dependencies=["db"]), context="dev")
    assert str(raised.value) == (
        "task 'app' depends on 'db', which is not in scope for command 'apply' in context "
        "'dev' (context 'dev' is not in its contexts ['prod']); widen the scope of 'db' or "
        "narrow the scope of 'app'"
    )


def test_a_dependency_on_a_missing_task_suggests_the_near_name() -> None:
    with pytest.raises(DependencyError) as raised:
        plan(deploy("database"), deploy("app", dependencies=["databse"]))
    assert str(raised.value) == (
        "task 'app' depends on 'databse', but no task is named 'databse' (did you mean 'database'?)"
    )


def test_a_cycle_is_named_along_its_tasks_and_not_the_tasks_that_only_wait_on_it() -> None:
    with pytest.raises(CycleError) as raised:
        plan(
            deploy("start"),
            deploy("a", dependencies=["start", "c"]),
            deploy("b", dependencies=["a"]),
            deploy("c", dependencies=["b"]),
            deploy("after", dependencies=["c"]),
        )
    cycle = raised.value.tasks
    assert sorted(cycle) == ["a", "b", "c"]
    # Each task along the cycle depends on the one before it (the last on the first).
    depends_on = {"a": "c", "b": "a", "c": "b"}
    assert all(depends_on[cycle[k]] == cycle[k - 1] for k in range(3)) or all(
        depends_on[cycle[k - 1]] == cycle[k] for k in range(3)
    )
    assert str(raised.value).startswith("dependency cycle: ")
    assert isinstance(raised.value, DependencyError)


def test_a_task_depending_on_itself_is_a_cycle_of_one() -> None:
    with pytest.raises(CycleError) as raised:
        plan(deploy("ouroboros", dependencies=["ouroboros"]))
    assert raised.value.tasks == ["ouroboros"]
    assert str(raised.value) == (
        "dependency cycle: ouroboros -> ouroboros; remove one of these dependencies"
    )


def test_a_cycle_through_labels_is_a_cycle() -> None:
    with pytest.raises(CycleError) as raised:
        plan(
            deploy("x", labels={"ring": "1"}, dependencies=["y"]),
            deploy("y", dependencies=[{"labels": {"ring": "1"}}]),
        )
    assert sorted(raised.value.tasks) == ["x", "y"]


# -- the rest of the module's public names -----------------------------------------------------


def test_close_over_dependencies_follows_names_and_labels_whatever_the_scope() -> None:
    tasks = [
        deploy("root"),
        deploy("data", labels={"tier": "data"}, dependencies=["root"], contexts=["prod"]),
        deploy("app", dependencies=[{"labels": {"tier": "data"}}]),
        deploy("unrelated"),
        deploy("cli", dependencies=["app", "missing"]),
    ]
    kept = close_over_dependencies(tasks, [tasks[4]])
    assert sorted(t.task_id for t in tasks if id(t) in kept) == ["app", "cli", "data", "root"]
    assert close_over_dependencies(tasks, []) == set()


def test_an_adjacency_reads_like_a_list_of_tuples_and_reverses() -> None:
    adjacency = Adjacency.from_lists([[1, 2], [], [1]])
    assert len(adjacency) == 3
    assert list(adjacency) == [(1, 2), (), (1,)]
    assert adjacency[0] == (1, 2) and adjacency[-1] == (1,) and adjacency[0:2] == [(1, 2), ()]
    with pytest.raises(IndexError):
        adjacency[3]
    assert list(adjacency.reversed_edges()) == [(), (0, 2), (0,)]
    assert list(Adjacency.empty(2)) == [(), ()]
