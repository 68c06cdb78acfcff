"""Checks across the whole dialplan once it is read: references, languages, reachability, loops,
numbers claimed twice. Pure: adds problems, never raises.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callctl.flows.calendars import PUBLIC_HOLIDAYS
from callctl.flows.model import (
    BUILTIN_VARIABLES,
    Collect,
    Custom,
    Dial,
    Dialplan,
    Flow,
    GotoFlow,
    HangUp,
    Menu,
    Play,
    Python,
    Step,
    When,
)
from callctl.flows.phone import e164_problem
from callctl.flows.reader import Refs, suggest
from callctl.flows.yamlsafe import Problems

WAITING_STEPS = (Play, Menu, Collect, Dial, Python, Custom)

Node = tuple[str, int]  # (flow, step index)


@dataclass(frozen=True)
class Endpoints:
    """The PJSIP endpoints of the configuration the engine runs with, and where they were read."""

    names: frozenset[str]
    source: str


def validate(plan: Dialplan, refs: Refs, problems: Problems, endpoints: Endpoints | None = None, *,
             partial: bool = False) -> None:
    """``partial``: a file did not read, so names it may define are not reported missing (those
    problems would be consequences of the one already reported)."""
    reach = _flow_reach(plan)
    _check_dial_targets(plan, refs, reach, problems, endpoints)
    if not partial:
        _check_flow_refs(plan, refs, problems)
        _check_calendar_refs(plan, refs, problems)
        _check_prompts(plan, refs, reach, problems)
        _check_variables(refs, problems)
        _check_when(plan, reach, problems)
    for flow in plan.flows.values():
        _check_unreachable(flow, problems)
    _check_loops(plan, problems)
    _check_numbers(plan, problems)
    _check_organizer_paid(plan, problems)


def _check_flow_refs(plan: Dialplan, refs: Refs, problems: Problems) -> None:
    for pos, source, target in refs.flows:
        if target not in plan.flows:
            problems.add(pos, f"flow '{source}' continues in unknown flow '{target}'{suggest(target, plan.flows)}")


def _check_calendar_refs(plan: Dialplan, refs: Refs, problems: Problems) -> None:
    calendars = {PUBLIC_HOLIDAYS, *plan.calendars}
    for pos, name in refs.calendars:
        if name not in calendars:
            problems.add(pos, f"unknown calendar '{name}'{suggest(name, calendars)} ('holidays' is built in: the "
                              "public holidays of the number's country; others go in a calendars: section)")
    for pos, name in refs.switches:
        if name not in plan.switches:
            problems.add(pos, f"unknown switch '{name}'{suggest(name, plan.switches)} (declare it in a switches: "
                              "section, e.g. switches: {" + name + ": {default: off}})")


def _check_dial_targets(plan: Dialplan, refs: Refs, reach: dict[str, set[tuple[str, str, str]]],
                        problems: Problems, endpoints: Endpoints | None) -> None:
    if endpoints is not None:
        for pos, trunk in refs.trunks:
            if trunk not in endpoints.names:
                problems.add(pos, f"trunk '{trunk}' is not a PJSIP endpoint in {endpoints.source}"
                                  f"{suggest(trunk, endpoints.names)}")
    for pos, flow, number in refs.dial_numbers:
        countries = [code for _, code, _ in sorted(reach.get(flow, ()))] + list(plan.countries)
        problem = e164_problem(number, dict.fromkeys(countries))
        if problem is not None:
            problems.add(pos, f"dial number '{number}' {problem}")


def _flow_reach(plan: Dialplan) -> dict[str, set[tuple[str, str, str]]]:
    """For each flow, the (language, country, number) of the numbers whose calls may run it."""
    reach: dict[str, set[tuple[str, str, str]]] = {name: set() for name in plan.flows}
    queue: deque[tuple[str, tuple[str, str, str]]] = deque()
    for entry in plan.numbers:
        if entry.flow in reach:
            queue.append((entry.flow, (entry.language, entry.country, f"{entry.text} ({entry.pos})")))
    while queue:
        name, origin = queue.popleft()
        if origin in reach[name]:
            continue
        reach[name].add(origin)
        for step in plan.flows[name].steps:
            if isinstance(step, GotoFlow) and step.flow in reach:
                queue.append((step.flow, origin))
    return reach


def _check_prompts(plan: Dialplan, refs: Refs, reach: dict[str, set[tuple[str, str, str]]],
                   problems: Problems) -> None:
    for pos, flow, name in refs.prompts:
        prompt = plan.prompts.get(name)
        if prompt is None:
            problems.add(pos, f"unknown prompt '{name}'{suggest(name, plan.prompts)} (or media like sound:{name})")
            continue
        missing: dict[str, str] = {}
        for language, _, number in sorted(reach.get(flow, ())):
            if prompt.version(language) is None:
                missing.setdefault(language, number)
        for language, number in missing.items():
            has = ", ".join(sorted(prompt.versions))
            problems.add(pos, f"prompt '{name}' has no '{language}' version (it has: {has}; {prompt.pos}) but "
                              f"number {number} runs flow '{flow}' in '{language}'")


def _check_variables(refs: Refs, problems: Problems) -> None:
    known = set(refs.stored) | set(BUILTIN_VARIABLES)
    for pos, _, var in refs.variables:
        if var not in known:
            problems.add(pos, f"unknown variable '{{{var}}}'{suggest(var, known)} (a collect 'into' or a "
                              "'set' stores one)")


def _check_when(plan: Dialplan, reach: dict[str, set[tuple[str, str, str]]], problems: Problems) -> None:
    for flow in plan.flows.values():
        for step in flow.steps:
            if not isinstance(step, When) or step.window_name != "canvassing":
                continue
            for _, code, number in sorted(reach.get(flow.name, ())):
                country = plan.countries.get(code)
                if country is not None and country.canvassing is None:
                    problems.add(step.pos, f"step '{step.label}' uses the canvassing window, but country {code} "
                                           f"has none in the country table (number {number})")


def _successors(flow: Flow, i: int) -> tuple[list[int], bool]:
    """Indexes the step may go to next in its flow, and whether it may end the flow or leave it."""
    step = flow.steps[i]
    nexts = [flow.index_of(t) for t in step.targets() if _has(flow, t)]
    ends = isinstance(step, HangUp | GotoFlow)
    if isinstance(step, Menu | Collect) and step.on_failure is None:
        ends = True  # hangs up after the last attempt
    if isinstance(step, Custom) and not step.continues:
        ends = True
    if step.falls_through():
        if i + 1 < len(flow.steps):
            nexts.append(i + 1)
        else:
            ends = True
    return nexts, ends


def _plan_successors(plan: Dialplan, at: Node) -> tuple[list[Node], bool]:
    """Like ``_successors`` across the whole dialplan: ``flow: other`` goes on at the other flow's
    first step instead of ending, so a loop through several flows is seen as one loop."""
    flow = plan.flows[at[0]]
    step = flow.steps[at[1]]
    nexts, ends = _successors(flow, at[1])
    out: list[Node] = [(flow.name, n) for n in nexts]
    if isinstance(step, GotoFlow):
        target = plan.flows.get(step.flow)
        if target is not None and target.steps:
            out.append((target.name, 0))
            ends = False
    return out, ends


def _has(flow: Flow, name: str) -> bool:
    return any(s.name == name for s in flow.steps)


def _check_unreachable(flow: Flow, problems: Problems) -> None:
    if not flow.steps:
        return
    seen = {0}
    queue = deque([0])
    while queue:
        for n in _successors(flow, queue.popleft())[0]:
            if n not in seen:
                seen.add(n)
                queue.append(n)
    for i, step in enumerate(flow.steps):
        if i not in seen:
            problems.add(step.pos, f"step '{step.label}' of flow '{flow.name}' can never run (nothing leads to it: "
                                   "give it a name and goto it, or remove it)")


def _check_loops(plan: Dialplan, problems: Problems) -> None:
    """Every cycle of steps, within a flow or through several (``flow: other``), must wait for
    something (play, menu, collect, dial) and have a way out."""
    graph = {(name, i): _plan_successors(plan, (name, i))
             for name, flow in plan.flows.items() for i in range(len(flow.steps))}
    for component in _cycles({node: nexts for node, (nexts, _) in graph.items()}):
        ordered = sorted(component, key=lambda node: (plan.flows[node[0]].pos, node[1]))
        steps: list[Step] = [plan.flows[f].steps[i] for f, i in ordered]
        flows = list(dict.fromkeys(f for f, _ in ordered))
        if len(flows) == 1:
            path = " -> ".join(f"'{s.label}'" for s in steps)
            where = f"in flow '{flows[0]}'"
        else:
            path = " -> ".join(f"flow '{f}' '{plan.flows[f].steps[i].label}'" for f, i in ordered)
            where = "across flows " + ", ".join(f"'{f}'" for f in flows)
        exits = any(graph[n][1] or any(m not in component for m in graph[n][0]) for n in component)
        first = steps[0]
        if not exits:
            problems.add(first.pos, f"loop {path} {where} has no exit: the call would never "
                                    "end (add a menu, a hangup or a way out)")
        elif not any(isinstance(s, WAITING_STEPS) for s in steps):
            problems.add(first.pos, f"loop {path} {where} never waits (no play, menu, collect "
                                    "or dial with a timeout): it would spin forever")


def _cycles(graph: dict[Node, list[Node]]) -> list[set[Node]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[Node, int] = {}
    low: dict[Node, int] = {}
    stack: list[Node] = []
    on_stack: set[Node] = set()
    out: list[set[Node]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, child = work.pop()
            if child == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            for j in range(child, len(graph[v])):
                w = graph[v][j]
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                component: set[Node] = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1 or v in graph[v]:
                    out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _check_numbers(plan: Dialplan, problems: Problems) -> None:
    exact: dict[str, str] = {}
    for entry in plan.numbers:
        if entry.number is None:
            continue
        if entry.number in exact:
            problems.add(entry.pos, f"number {entry.number} is claimed twice: flow '{entry.flow}' here and "
                                    f"{exact[entry.number]}")
        else:
            exact[entry.number] = f"flow '{entry.flow}' at {entry.pos}"
    patterns = [e for e in plan.numbers if e.pattern is not None]
    for i, a in enumerate(patterns):
        for b in patterns[:i]:
            assert a.pattern is not None and b.pattern is not None
            if a.pattern.text == b.pattern.text:
                problems.add(a.pos, f"pattern {a.pattern.text} is claimed twice: flow '{a.flow}' here and flow "
                                    f"'{b.flow}' at {b.pos}")
            elif a.pattern.specificity == b.pattern.specificity and a.pattern.overlaps(b.pattern):
                problems.add(a.pos, f"pattern {a.pattern.text} and pattern {b.pattern.text} ({b.pos}) can match "
                                    "the same number and neither is more specific: make one of them narrower")


def _check_organizer_paid(plan: Dialplan, problems: Problems) -> None:
    """The local number an organizer-paid line refers callers to must not be organizer-paid itself."""
    paid = {e.number for e in plan.numbers if e.organizer_paid is not None and e.number is not None}
    for entry in plan.numbers:
        local = entry.organizer_paid.local_number if entry.organizer_paid is not None else None
        if local is not None and local in paid:
            problems.add(entry.pos, f"organizer_paid local_number {local} is itself organizer-paid: give the "
                                    "conference's local (caller-paid) access number")
