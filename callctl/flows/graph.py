"""A dialplan drawn as a graph: steps as nodes; keys, outcomes, timeouts and gotos as labelled edges.

Pure: builds Graphviz DOT text (the ``graphviz`` binding quotes every name, so a step or prompt
named with quotes or markup cannot break the file). Rendering to SVG/PNG runs Graphviz's ``dot``
in the CLI (``callctl dialplan graph``). Edge counts come from stored call traces (``--calls``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import graphviz

from callctl.flows.model import (
    Branch,
    Collect,
    Custom,
    Dial,
    Dialplan,
    Flow,
    Goto,
    GotoFlow,
    HangUp,
    Menu,
    Step,
    When,
)

END = "(end)"  # a flow that runs off its last step hangs up: drawn as one node per flow
# (from flow, from step label, to flow, to step label) -> calls that took the edge
EdgeCounts = Mapping[tuple[str, str, str, str], int]

_SHAPES = {"menu": "diamond", "branch": "diamond", "voicemail": "cylinder", "collect": "parallelogram",
           "when": "hexagon", "dial": "box3d",
           "hangup": "octagon", "flow": "cds", "goto": "cds"}


@dataclass(frozen=True)
class Edge:
    """One arrow: from a step to a step (maybe in another flow, maybe the flow's end)."""

    flow: str
    source: str  # step label
    target_flow: str
    target: str  # step label, or END
    label: str


def step_edges(plan: Dialplan, flow: Flow) -> Iterator[Edge]:
    """Every way out of every step of ``flow``, labelled with what makes the call take it."""
    names = {s.name: s for s in flow.steps if s.name}
    for i, step in enumerate(flow.steps):
        following = flow.steps[i + 1].label if i + 1 < len(flow.steps) else END

        def to(target: str | None, label: str, *, step: Step = step) -> Edge:
            label_of = names[target].label if target in names else (target or END)
            return Edge(flow.name, step.label, flow.name, label_of, label)

        explicit: set[str] = set()
        if isinstance(step, Menu):
            for key, target in step.options.items():
                yield to(target, f"key {key}")
                explicit.add(target)
            if step.on_failure:
                yield to(step.on_failure, f"{step.attempts} failed attempts")
                explicit.add(step.on_failure)
            else:
                yield Edge(flow.name, step.label, flow.name, END, f"{step.attempts} failed attempts")
            continue
        if isinstance(step, Collect):
            if step.on_failure:
                yield to(step.on_failure, f"{step.attempts} failed attempts")
            else:
                yield Edge(flow.name, step.label, flow.name, END, f"{step.attempts} failed attempts")
            yield Edge(flow.name, step.label, flow.name, following, f"{step.into} collected")
            continue
        if isinstance(step, Dial):
            for status, target in step.branches.items():
                yield to(target, status)
            others = [s for s in ("answered", "busy", "noanswer", "congestion", "failed")
                      if s not in step.branches]
            if others:
                yield Edge(flow.name, step.label, flow.name, following, " / ".join(others))
            continue
        if isinstance(step, When):
            window = _when_condition(step)
            yield (to(step.then, f"open: {window}") if step.then
                   else Edge(flow.name, step.label, flow.name, following, f"open: {window}"))
            yield (to(step.otherwise, "closed") if step.otherwise
                   else Edge(flow.name, step.label, flow.name, following, "closed"))
            continue
        if isinstance(step, Branch):
            for value, target in step.equals.items():
                yield to(target, f"{step.value} = {value}")
            for start, target in step.prefix.items():
                yield to(target, f"{step.value} starts {start}")
            for threshold, target in step.at_least:
                yield to(target, f"{step.value} >= {threshold}")
            yield (to(step.otherwise, "otherwise") if step.otherwise
                   else Edge(flow.name, step.label, flow.name, following, "otherwise"))
            continue
        if isinstance(step, Goto):
            yield to(step.target, "goto")
            continue
        if isinstance(step, GotoFlow):
            target_flow = plan.flows.get(step.flow)
            first = target_flow.steps[0].label if target_flow and target_flow.steps else END
            yield Edge(flow.name, step.label, step.flow, first, "continue in flow")
            continue
        if isinstance(step, HangUp):
            continue
        for target in step.targets():  # python, custom and any later step type: generic gotos
            if target not in explicit:
                yield to(target, "goto")
                explicit.add(target)
        if step.falls_through():
            yield Edge(flow.name, step.label, flow.name, following, "")


def _when_condition(step: When) -> str:
    """What ``when`` checks, in the operator's words."""
    parts = [step.window_name] if step.window_name else []
    parts += [f"in {c}" for c in step.calendars]
    if step.dates:
        parts.append("on listed dates")
    parts += [f"not {c}" for c in step.closed_on]
    if step.switch:
        parts.append(f"switch {step.switch} on")
    return ", ".join(parts) or "always"


class _Ids:
    """Plain node ids (n0, n1, ...): a name with ':' would read as a DOT port, so names are labels only."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}

    def __call__(self, flow: str, label: str) -> str:
        return self._ids.setdefault((flow, label), f"n{len(self._ids)}")


def _merged(edges: Iterator[Edge]) -> list[Edge]:
    """Parallel arrows (busy, noanswer, congestion to one step) drawn as one, labels joined."""
    joined: dict[tuple[str, str, str, str], list[str]] = {}
    for e in edges:
        joined.setdefault((e.flow, e.source, e.target_flow, e.target), []).append(e.label)
    return [Edge(*key, " / ".join(lb for lb in labels if lb)) for key, labels in joined.items()]


def build(plan: Dialplan, *, flow: str | None = None, counts: EdgeCounts | None = None) -> graphviz.Digraph:
    """The graph of every flow (or only ``flow`` and the numbers routed to it)."""
    if flow is not None and flow not in plan.flows:
        known = ", ".join(sorted(plan.flows))
        raise KeyError(f"no flow named '{flow}' (known: {known})")
    dot = graphviz.Digraph("dialplan", graph_attr={"rankdir": "LR", "fontname": "Helvetica"},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    flows = [plan.flows[flow]] if flow is not None else [plan.flows[n] for n in sorted(plan.flows)]
    drawn = {f.name for f in flows}
    stubs: set[str] = set()
    _node_id = _Ids()
    for current in flows:
        with dot.subgraph(name=f"cluster_{current.name}") as sub:
            sub.attr(label=f"flow {current.name}", style="rounded", color="grey60")
            for step in current.steps:
                kind = step.type_name if isinstance(step, Custom) else step.kind
                text = step.label if step.label.endswith(kind) else f"{step.label}\n({kind})"
                prompts = step.prompt_refs()
                if prompts:
                    text += "\n" + ", ".join(prompts[:3]) + (" ..." if len(prompts) > 3 else "")
                sub.node(_node_id(current.name, step.label), text, shape=_SHAPES.get(kind, "box"))
            edges = _merged(step_edges(plan, current))
            if any(e.target == END and e.target_flow == current.name for e in edges):
                sub.node(_node_id(current.name, END), "end: hang up", shape="point", width="0.15")
        for edge in edges:
            if edge.target_flow not in drawn and edge.target_flow not in stubs:
                stubs.add(edge.target_flow)
                dot.node(_node_id(edge.target_flow, edge.target), f"flow {edge.target_flow}", shape="folder")
            attrs: dict[str, str] = {}
            label = edge.label
            if counts is not None:
                n = counts.get((edge.flow, edge.source, edge.target_flow, edge.target), 0)
                label = f"{label} ({n} calls)" if label else f"{n} calls"
                attrs["penwidth"] = str(1 + min(n, 1000) ** 0.5 / 4)
            dot.edge(_node_id(edge.flow, edge.source), _node_id(edge.target_flow, edge.target), label, **attrs)
    for entry in plan.numbers:
        if entry.flow not in drawn:
            continue
        target = plan.flows[entry.flow]
        first = target.steps[0].label if target.steps else END
        node = _node_id("\x00number", entry.text)
        dot.node(node, f"{entry.text}\n{entry.language} {entry.country}", shape="note", style="filled",
                 fillcolor="lightyellow")
        dot.edge(node, _node_id(entry.flow, first))
    return dot


def edge_counts(traces: list[list[tuple[str, str]]]) -> dict[tuple[str, str, str, str], int]:
    """Count, over call traces (each a list of (flow, step label) in the order run), how many calls
    took each edge; a trace's last step leads to its flow's end. A call counts once per edge."""
    totals: dict[tuple[str, str, str, str], int] = {}
    for trace in traces:
        seen: set[tuple[str, str, str, str]] = set()
        for (flow, label), (next_flow, next_label) in itertools.pairwise(trace):
            seen.add((flow, label, next_flow, next_label))
        if trace:
            seen.add((trace[-1][0], trace[-1][1], trace[-1][0], END))
        for key in seen:
            totals[key] = totals.get(key, 0) + 1
    return totals
