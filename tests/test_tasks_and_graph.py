"""Choosing tasks (`opus run NAME`, `-k EXPR`), listing them (`opus tasks`), drawing them (`opus graph`)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from cli_helpers import one_line_error, opus

ROOT = Path(__file__).resolve().parent.parent

PROCESSORS = """
from pathlib import Path
from opus_core import TaskProcessor

class Step(TaskProcessor):
    kind = "Step"
    def process_task(self, task, command, context, key_value_store, state_persistence):
        with open(Path(__file__).parent / "ran.txt", "a") as ran:
            ran.write(task.task_id + "\\n")
        return {}

class Check(Step):
    kind = "Check"
"""

# fetch -> clean -> train -> report -> deploy (prod only); lint alone; audit (a Check) after
# every task labelled stage=prep.
SHOP = """
[opus]
processors = ["processors:Step", "processors:Check"]

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "fetch", labels = { stage = "ingest" } }

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "clean", labels = { stage = "prep" }, dependencies = ["fetch"] }

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "train", labels = { gpu = "yes" }, dependencies = ["clean"] }

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "report", dependencies = ["train"] }

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "deploy", dependencies = ["report"], contexts = ["prod"] }

[[tasks]]
kind = "Step"
version = "v1"
metadata = { name = "lint", labels = { stage = "prep" } }

[[tasks]]
kind = "Check"
version = "v1"
metadata = { name = "audit", dependencies = [{ labels = { stage = "prep" } }] }
"""


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "processors.py").write_text(PROCESSORS)
    (tmp_path / "opus.toml").write_text(textwrap.dedent(SHOP))
    return tmp_path


def ran(project: Path, *args: str) -> list[str]:
    """Run `opus run ARGS` and return the tasks that ran, in order."""
    result = opus("run", *args, cwd=project)
    assert "Traceback" not in result.stderr, result.stderr
    log = project / "ran.txt"
    return log.read_text().splitlines() if log.exists() else []


# -- selection ---------------------------------------------------------------------------------


def test_run_names_runs_those_tasks_and_what_they_depend_on(shop: Path) -> None:
    assert ran(shop, "train") == ["fetch", "clean", "train"]


def test_run_k_selects_by_a_substring_of_the_name_ignoring_case(shop: Path) -> None:
    assert sorted(ran(shop, "-k", "REP")) == ["clean", "fetch", "report", "train"]


def test_run_k_selects_by_label(shop: Path) -> None:
    assert sorted(ran(shop, "-k", "stage=prep")) == ["clean", "fetch", "lint"]


def test_run_k_with_not_keeps_what_the_selected_tasks_depend_on(shop: Path) -> None:
    # everything but fetch is selected; fetch still runs, for clean
    assert sorted(ran(shop, "-k", "not fetch")) == sorted(
        ["fetch", "clean", "train", "report", "lint", "audit"]
    )


def test_run_k_with_and_or_and_parentheses(shop: Path) -> None:
    selected = ran(shop, "-k", "(lint or gpu=yes) and not stage=ingest")
    assert sorted(selected) == ["clean", "fetch", "lint", "train"]


def test_run_k_narrows_the_named_tasks(shop: Path) -> None:
    assert sorted(ran(shop, "audit", "-k", "lint")) == ["lint"]


def test_run_k_matching_nothing_runs_nothing(shop: Path) -> None:
    assert ran(shop, "-k", "nosuchtask") == []
    result = opus("run", "-k", "nosuchtask", cwd=shop)
    assert result.returncode == 5
    assert "opus: nothing to run: -k 'nosuchtask' selects no task" in result.stderr


def test_quoted_words_hold_spaces_and_reserved_words(shop: Path) -> None:
    (shop / "opus.toml").write_text(
        textwrap.dedent(SHOP)
        + '\n[[tasks]]\nkind = "Step"\nversion = "v1"\n'
        + 'metadata = { name = "or else", labels = { note = "a b" } }\n'
    )
    assert ran(shop, "-k", "'or else'") == ["or else"]
    (shop / "ran.txt").unlink()
    assert ran(shop, "-k", 'note="a b"') == ["or else"]


@pytest.mark.parametrize(
    ("expression", "where"),
    [
        ("train and", "column 10"),
        ("(train or lint", "'(' at column 1 is never closed"),
        ("train)", "unexpected ')' at column 6"),
        ("train lint", "join words with 'and' or 'or'"),
        ("stage=", "expected a value after stage="),
        ("and train", "column 1"),
        ("train 'lint", "unclosed quote"),
    ],
)
@pytest.mark.parametrize("command", ["run", "tasks", "graph"])
def test_a_bad_k_expression_is_one_line_naming_it(
    shop: Path, command: str, expression: str, where: str
) -> None:
    line = one_line_error(opus(command, "-k", expression, cwd=shop))
    assert f"opus {command}: error: argument -k:" in line
    assert repr(expression) in line
    assert where in line
    assert not (shop / "ran.txt").exists()


def test_an_unknown_name_is_an_error_with_a_suggestion(shop: Path) -> None:
    line = one_line_error(opus("tasks", "trian", cwd=shop))
    assert "no task named 'trian'; did you mean 'train'?" in line


# -- opus tasks --------------------------------------------------------------------------------


def test_opus_tasks_lists_kind_labels_dependencies_and_what_is_out_of_scope(shop: Path) -> None:
    result = opus("tasks", cwd=shop)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TASK", "KIND", "LABELS", "DEPENDS", "ON", "SCOPE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert rows["clean"].split()[:5] == ["clean", "Step", "stage=prep", "fetch", "in"]
    assert rows["audit"].split()[:6] == ["audit", "Check", "-", "clean,", "lint", "in"]
    assert "out: context 'default' is not in its contexts ['prod']" in rows["deploy"]
    assert list(rows)[-1] == "deploy"  # out of scope comes after the tasks in scope
    assert lines[-1] == (
        "6 task(s) in scope for command 'apply' in context 'default'; 1 out of scope"
    )


def test_opus_tasks_json(shop: Path) -> None:
    result = opus("tasks", "--json", "--context", "prod", cwd=shop)
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["deploy"] == {
        "name": "deploy",
        "id": "deploy",
        "kind": "Step",
        "version": "v1",
        "labels": {},
        "dependencies": ["report"],
        "resources": {},
        "priority": 0,
        "inputs": [],
        "outputs": [],
        "cached": False,
        "in_scope": True,
        "why": None,
    }
    assert records["audit"]["dependencies"] == ["clean", "lint"]
    assert records["fetch"]["labels"] == {"stage": "ingest"}
    assert all(r["in_scope"] for r in records.values())


def test_opus_tasks_marks_out_of_scope_with_why_in_json(shop: Path) -> None:
    records = json.loads(opus("tasks", "--json", cwd=shop).stdout)
    deploy = next(r for r in records if r["name"] == "deploy")
    assert deploy["in_scope"] is False
    assert deploy["why"] == "context 'default' is not in its contexts ['prod']"
    assert deploy["dependencies"] == ["report"]  # as its manifest declares


def test_opus_tasks_with_names_and_k_lists_the_selection(shop: Path) -> None:
    result = opus("tasks", "report", "-k", "clean", "--json", cwd=shop)
    assert [r["name"] for r in json.loads(result.stdout)] == ["fetch", "clean"]
    table = opus("tasks", "-k", "lint", cwd=shop).stdout
    assert table.splitlines()[-1].endswith("; 6 not selected")


def test_opus_tasks_applies_modify_tasks_plugins(shop: Path) -> None:
    (shop / "no_lint.py").write_text(
        "from opus_core import hookimpl\n\n"
        "@hookimpl\n"
        "def opus_modify_tasks(tasks):\n"
        "    tasks[:] = [t for t in tasks if t.name != 'lint']\n"
    )
    result = opus("-p", "no_lint", "tasks", "--json", cwd=shop, env={"PYTHONPATH": str(shop)})
    assert result.returncode == 0, result.stderr
    names = [r["name"] for r in json.loads(result.stdout)]
    assert "lint" not in names and "audit" in names


# -- opus graph --------------------------------------------------------------------------------


def mermaid_parts(output: str) -> tuple[dict[str, str], list[tuple[str, str, str]], set[str]]:
    """Nodes (id -> text), edges (from, arrow, to) and nodes of the class `out` of a flowchart.

    Fails on any line that is not a node, an edge, a comment or a class definition.
    """
    lines = output.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    out: set[str] = set()
    for line in lines[1:]:
        if node := re.fullmatch(r'  (n\d+)\["([^"]*)"\](:::out)?', line):
            nodes[node[1]] = node[2]
            if node[3]:
                out.add(node[1])
        elif edge := re.fullmatch(r"  (n\d+) (-->|-\.->)(?:\|\d+\|)? (n\d+)", line):
            edges.append((edge[1], edge[2], edge[3]))
        else:
            assert re.fullmatch(r"  %% .*|  classDef out .*", line), line
    assert all(a in nodes and b in nodes for a, _, b in edges)
    return nodes, edges, out


def test_graph_is_mermaid_by_default(shop: Path) -> None:
    result = opus("graph", cwd=shop)
    assert result.returncode == 0, result.stderr
    nodes, edges, out = mermaid_parts(result.stdout)
    name = {node_id: text.split("<br/>")[0] for node_id, text in nodes.items()}
    named = {(name[a], arrow, name[b]) for a, arrow, b in edges}
    assert ("fetch", "-->", "clean") in named
    assert ("clean", "-->", "audit") in named and ("lint", "-->", "audit") in named
    assert ("report", "-.->", "deploy") in named  # deploy is out of scope: dashed
    assert {name[n] for n in out} == {"deploy"}
    assert "clean<br/>stage=prep" in nodes.values()  # labels are shown


def test_graph_dot_is_a_digraph_of_the_tasks(shop: Path) -> None:
    result = opus("graph", "--format", "dot", cwd=shop)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "digraph opus {" and lines[-1] == "}"
    labels: dict[str, str] = {}
    attributes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:-1]:
        if node := re.fullmatch(r'  (n\d+) \[label="((?:[^"\\]|\\.)*)"(.*)\];', line):
            labels[node[1]] = node[2]
            attributes[node[1]] = node[3]
        elif edge := re.fullmatch(r"  (n\d+) -> (n\d+)( \[.*\])?;", line):
            edges.append((edge[1], edge[2], edge[3] or ""))
        else:
            assert re.fullmatch(r"  //.*|  rankdir=TB;|  node \[.*\];", line), line
    name = {node_id: label.split("\\n")[0] for node_id, label in labels.items()}
    assert sorted(name.values()) == sorted(
        ["fetch", "clean", "train", "report", "deploy", "lint", "audit"]
    )
    assert labels[next(n for n in name if name[n] == "train")] == "train\\ngpu=yes"
    named = {(name[a], name[b]): extra for a, b, extra in edges}
    assert named[("fetch", "clean")] == ""
    assert "style=dashed" in named[("report", "deploy")]
    deploy = next(n for n in name if name[n] == "deploy")
    assert 'style="rounded,dashed"' in attributes[deploy]
    assert "tooltip=\"context 'default' is not in its contexts ['prod']\"" in attributes[deploy]


def test_graph_text_is_a_tree_of_what_each_task_needs(shop: Path) -> None:
    result = opus("graph", "--format", "text", "--context", "prod", cwd=shop)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "deploy",  # in the order of opus.toml
        "└── report",
        "    └── train [gpu=yes]",
        "        └── clean [stage=prep]",
        "            └── fetch [stage=ingest]",
        "audit",
        "├── clean [stage=prep] (*)",  # drawn with what it needs above
        "└── lint [stage=prep]",
    ]


def test_graph_text_marks_tasks_out_of_scope(shop: Path) -> None:
    output = opus("graph", "--format", "text", "deploy", cwd=shop).stdout
    assert output.splitlines()[1] == (
        "deploy (out of scope: context 'default' is not in its contexts ['prod'])"
    )


def test_graph_draws_only_the_selection(shop: Path) -> None:
    nodes, edges, _ = mermaid_parts(opus("graph", "-k", "gpu=yes", cwd=shop).stdout)
    assert sorted(text.split("<br/>")[0] for text in nodes.values()) == [
        "clean",
        "fetch",
        "train",
    ]
    assert len(edges) == 2


def test_a_large_graph_is_grouped_by_kind_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "processors.py").write_text(PROCESSORS)
    tasks = "".join(
        f'[[tasks]]\nkind = "{"Check" if i % 10 == 0 else "Step"}"\nversion = "v1"\n'
        f'metadata = {{ name = "t{i}"'
        + (f', dependencies = ["t{i - 1}"]' if i else "")
        + (', contexts = ["prod"]' if i == 249 else "")
        + " }\n"
        for i in range(250)
    )
    (tmp_path / "opus.toml").write_text(
        '[opus]\nprocessors = ["processors:Step", "processors:Check"]\n' + tasks
    )
    result = opus("graph", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "250 tasks: grouped by kind" in result.stderr
    nodes, edges, out = mermaid_parts(result.stdout)
    assert sorted(nodes.values()) == [
        "Check<br/>25 tasks",
        "Step<br/>1 task<br/>(out of scope)",
        "Step<br/>224 tasks",
    ]
    assert len(out) == 1
    assert [arrow for _, arrow, b in edges if b in out] == ["-.->"]  # t248 -> t249, dashed
    assert "|25|" in result.stdout  # Check -> Step, counted
    assert "one node per kind" in result.stdout.splitlines()[1]
    every = opus("graph", "--group-by", "none", "--format", "dot", cwd=tmp_path)
    assert every.stdout.count("[label=") == 250 and "grouped" not in every.stderr


def test_graph_group_by_label(shop: Path) -> None:
    nodes, edges, _ = mermaid_parts(opus("graph", "--group-by", "label:stage", cwd=shop).stdout)
    assert sorted(nodes.values()) == [
        "no label stage<br/>1 task<br/>(out of scope)",
        "no label stage<br/>3 tasks",
        "stage=ingest<br/>1 task",
        "stage=prep<br/>2 tasks",
    ]
    name = {node_id: text.split("<br/>")[0] for node_id, text in nodes.items()}
    assert ("stage=prep", "no label stage") in {(name[a], name[b]) for a, _, b in edges}


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--format", "svg"], "--format"), (["--group-by", "colour"], "--group-by")],
)
def test_a_bad_graph_option_is_one_line_naming_it(shop: Path, args: list[str], flag: str) -> None:
    assert f"argument {flag}:" in one_line_error(opus("graph", *args, cwd=shop))


def test_the_tutorial_shows_what_opus_graph_and_opus_tasks_print() -> None:
    readme = (ROOT / "docs" / "tutorial.md").read_text()
    pipeline = ROOT / "examples" / "pipeline"
    graph = opus("graph", "--context", "prod", cwd=pipeline)
    assert graph.returncode == 0, graph.stderr
    assert f"```mermaid\n{graph.stdout}```" in readme
    listing = opus("tasks", "--context", "prod", cwd=pipeline)
    assert listing.returncode == 0, listing.stderr
    assert f"$ opus tasks --context prod\n{listing.stdout}```" in readme
    tree = opus("graph", "--format", "text", "--context", "prod", cwd=pipeline).stdout
    assert "```text\n" + tree.split("\n", 1)[1] + "```" in readme  # all but the heading
