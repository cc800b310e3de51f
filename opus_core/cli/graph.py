"""`opus graph`: the task graph as Mermaid (renders on GitHub), DOT (Graphviz) or a text tree.

Edges point from a dependency to the task that needs it, the order of a run.
Tasks out of scope are drawn dashed and grey (in text: marked), with the
dependencies their manifests declare. Above `GROUP_ABOVE` tasks the graph is
drawn one node per kind (`--group-by`), and the output says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opus_core.cli.arguments import selection_arguments
from opus_core.cli.commands import COMMAND_HELP
from opus_core.cli.tasks import Scope, nothing_in_scope, outside_a_project, scope

if TYPE_CHECKING:
    from opus_core.cli import Commands
    from opus_core.cli.context import CommandContext

GROUP_ABOVE = 200
"""More tasks than this are grouped by kind unless `--group-by none`."""

FORMATS = ("mermaid", "dot", "text")
"""The values of `--format`, the default first."""


@dataclass(slots=True)
class Node:
    """A box of the drawing: one task, or a group of tasks."""

    title: str
    detail: str
    in_scope: bool
    why: str | None = None


@dataclass(slots=True)
class Drawing:
    """What every format draws: nodes, edges `(dependency, dependent, how many)`, a heading."""

    nodes: list[Node]
    edges: list[tuple[int, int, int]]
    heading: str


def add_command(commands: Commands) -> None:
    """`opus graph`: its arguments, and `graph` to handle it."""
    parser = commands.add(
        "graph",
        graph,
        help=COMMAND_HELP["graph"],
        description="Print the task graph: Mermaid (renders on GitHub), DOT for Graphviz "
        "(opus graph --format dot | dot -Tsvg > graph.svg) or an indented text tree. Tasks "
        "out of scope are dashed and grey; above 200 tasks, one node per kind.",
    )
    selection_arguments(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="mermaid",
        help="mermaid (default), dot or text",
    )
    parser.add_argument(
        "--group-by",
        metavar="WHAT",
        default="auto",
        type=group_by_argument,
        help="auto (kind above 200 tasks), none, kind, or label:KEY (default: auto)",
    )


def group_by_argument(text: str) -> str:
    """`--group-by`: `auto`, `none`, `kind` or `label:KEY`."""
    if text in ("auto", "none", "kind") or (text.startswith("label:") and text[6:]):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not auto, none, kind or label:KEY (label:tier groups by the label tier)"
    )


def graph(context: CommandContext) -> int:
    """Print the graph of the tasks in scope for `--command` and `--context`; exit status 5,
    as `opus run`'s, when none is in scope or there is no `opus.toml`."""
    from opus_core.cli.scope import NOTHING_IN_SCOPE

    if outside_a_project(context):
        return NOTHING_IN_SCOPE
    args = context.args
    found = scope(context)
    group_by = args.group_by
    if group_by == "auto":
        group_by = "kind" if len(found.tasks) > GROUP_ABOVE else "none"
    drawing = tasks_drawing(found) if group_by == "none" else grouped_drawing(found, group_by)
    if args.group_by == "auto" and group_by != "none":
        sys.stderr.write(
            f"opus: {len(found.tasks)} tasks: grouped by {group_by} "
            "(--group-by none draws each task; NAME or -k EXPR draws fewer)\n"
        )
    render: Callable[[Drawing], str] = {"mermaid": mermaid, "dot": dot, "text": text}[args.format]
    print(render(drawing))
    return nothing_in_scope(context, found)


def _heading(found: Scope, grouping: str | None = None) -> str:
    text = found.summary()
    if grouping:
        text += f"; one node per {grouping}, edges counted"
    return text


def tasks_drawing(found: Scope) -> Drawing:
    """One node per task, labelled with its labels."""
    nodes = [
        Node(s.name, "" if s.labels == "-" else s.labels, s.in_scope, s.why) for s in found.tasks
    ]
    edges = [(j, i, 1) for i, s in enumerate(found.tasks) for j in s.after]
    return Drawing(nodes, edges, _heading(found))


def grouped_drawing(found: Scope, group_by: str) -> Drawing:
    """One node per kind (`kind`) or per value of a label (`label:KEY`), in scope or not."""
    if group_by == "kind":
        keys = [s.task.kind for s in found.tasks]
        what = "kind"
    else:
        label = group_by.removeprefix("label:")
        keys = [
            f"{label}={s.task.meta.labels[label]}"
            if label in s.task.meta.labels
            else f"no label {label}"
            for s in found.tasks
        ]
        what = f"value of the label {label!r}"
    group_of: dict[tuple[str, bool], int] = {}
    members: list[int] = []
    nodes: list[Node] = []
    position = []
    for key, s in zip(keys, found.tasks, strict=True):
        index = group_of.setdefault((key, s.in_scope), len(nodes))
        if index == len(nodes):
            nodes.append(Node(key, "", s.in_scope, None if s.in_scope else "out of scope"))
            members.append(0)
        members[index] += 1
        position.append(index)
    for node, count in zip(nodes, members, strict=True):
        node.detail = f"{count} task{'s' if count != 1 else ''}"
    counted: dict[tuple[int, int], int] = {}
    for i, s in enumerate(found.tasks):
        for j in s.after:
            edge = (position[j], position[i])
            if edge[0] != edge[1]:
                counted[edge] = counted.get(edge, 0) + 1
    edges = [(a, b, n) for (a, b), n in counted.items()]
    return Drawing(nodes, edges, _heading(found, what))


# -- formats -----------------------------------------------------------------------------------


def mermaid(drawing: Drawing) -> str:
    """A Mermaid flowchart; tasks out of scope in the class `out` (dashed, grey)."""

    def escape(value: str) -> str:
        for raw, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
            value = value.replace(raw, code)
        return value

    lines = ["flowchart TD", f"  %% {escape(drawing.heading)}"]
    for i, node in enumerate(drawing.nodes):
        text = escape(node.title)
        if node.detail:
            text += "<br/>" + escape(node.detail)
        if not node.in_scope:
            text += "<br/>(out of scope)"
        lines.append(f'  n{i}["{text}"]' + ("" if node.in_scope else ":::out"))
    for a, b, count in drawing.edges:
        dashed = not (drawing.nodes[a].in_scope and drawing.nodes[b].in_scope)
        arrow = "-.->" if dashed else "-->"
        lines.append(f"  n{a} {arrow}{f'|{count}|' if count > 1 else ''} n{b}")
    if not all(node.in_scope for node in drawing.nodes):
        lines.append("  classDef out fill:#f6f6f6,stroke:#999,stroke-dasharray:5 4,color:#888")
    return "\n".join(lines)


def dot(drawing: Drawing) -> str:
    """A Graphviz digraph; tasks out of scope dashed and grey, with why as a tooltip."""

    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [
        "digraph opus {",
        f"  // {' '.join(drawing.heading.split())}",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
    ]
    for i, node in enumerate(drawing.nodes):
        label = node.title + (f"\n{node.detail}" if node.detail else "")
        if node.in_scope:
            lines.append(f"  n{i} [label={quote(label)}];")
        else:
            lines.append(
                f"  n{i} [label={quote(label + chr(10) + '(out of scope)')}, "
                f'style="rounded,dashed", color=gray60, fontcolor=gray45, '
                f"tooltip={quote(node.why or 'out of scope')}];"
            )
    for a, b, count in drawing.edges:
        attributes = []
        if not (drawing.nodes[a].in_scope and drawing.nodes[b].in_scope):
            attributes += ["style=dashed", "color=gray60"]
        if count > 1:
            attributes.append(f'label="{count}"')
        lines.append(
            f"  n{a} -> n{b}" + (f" [{', '.join(attributes)}]" if attributes else "") + ";"
        )
    lines.append("}")
    return "\n".join(lines)


def text(drawing: Drawing) -> str:
    """An indented tree: each task that nothing depends on, above what it depends on.

    A task already drawn with its dependencies is drawn again as `name (*)`,
    as `cargo tree` does, so shared dependencies are expanded once.
    """
    needs: list[list[tuple[int, int]]] = [[] for _ in drawing.nodes]
    needed = [False] * len(drawing.nodes)
    for a, b, count in drawing.edges:
        needs[b].append((a, count))
        needed[a] = True
    lines = [drawing.heading + "; each task above what it depends on:"]
    expanded: set[int] = set()

    def describe(i: int, count: int) -> str:
        node = drawing.nodes[i]
        line = node.title + (f" [{node.detail}]" if node.detail else "")
        if count > 1:
            line += f" ({count} edges)"
        if not node.in_scope:
            line += f" (out of scope: {node.why})"
        return line

    def draw(i: int, prefix: str, last: bool, top: bool, count: int) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        line = describe(i, count)
        if needs[i] and i in expanded:
            lines.append(prefix + branch + line + " (*)")
            return
        lines.append(prefix + branch + line)
        expanded.add(i)
        below = prefix if top else prefix + ("    " if last else "│   ")
        for k, (j, n) in enumerate(needs[i]):
            draw(j, below, k == len(needs[i]) - 1, False, n)

    tops = [i for i in range(len(drawing.nodes)) if not needed[i]]
    for i in tops:
        draw(i, "", True, True, 1)
    for i in range(len(drawing.nodes)):  # in a cycle among tasks out of scope: never a top
        if i not in expanded:
            draw(i, "", True, True, 1)
    if not drawing.nodes:
        lines.append("(no tasks)")
    return "\n".join(lines)
