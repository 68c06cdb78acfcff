"""The ``flows`` section: name -> ``Flow``, a list of steps; each step item is read by its type's
parser (built in: sections/steps.py; added by features: the registry)."""

from __future__ import annotations

import difflib
from typing import Any

from callctl.flows import registry
from callctl.flows.model import Custom, Flow, Step, is_media
from callctl.flows.reader import NAME_RE, Sections, StepReader, what_is
from callctl.flows.sections import steps
from callctl.flows.yamlsafe import Node

BUILTIN_STEPS = tuple(steps.PARSERS)


def flow_nodes(ctx: Sections) -> dict[str, tuple[Node, Node]]:
    return ctx.named_entries("flows", NAME_RE, " (letters, digits, - and _)")


def parse_flow(ctx: Sections, name: str, key: Node, node: Node) -> Flow:
    if node.kind != "seq" or not node.items:
        ctx.problems.add(node.pos, f"flow '{name}' must be a list of steps (- answer, - play: ...)")
        return Flow(name=name, steps=(), pos=key.pos)
    names: list[str] = []
    for item in node.items:
        step_name = None
        if item.kind == "map" and "name" in item.entries:
            _, name_node = item.entries["name"]
            step_name = ctx.reader("step", name_node).text(name_node, "step name", pattern=NAME_RE,
                                                             hint=" (letters, digits, - and _)")
            if step_name is not None and step_name in names:
                ctx.problems.add(name_node.pos, f"flow '{name}' has two steps named '{step_name}'")
        names.append(step_name or "")
    steps = []
    for index, item in enumerate(node.items, 1):
        step = _step(ctx, name, names, index, item)
        if step is not None:
            steps.append(step)
    return Flow(name=name, steps=tuple(steps), pos=key.pos)


def _step(ctx: Sections, flow: str, names: list[str], index: int, node: Node) -> Step | None:
    kinds = [*BUILTIN_STEPS, *registry.step_types()]
    step_name = names[index - 1] or None
    if node.kind == "scalar" and not node.is_null:
        kind, value = node.text, Node("scalar", node.pos, tag="tag:yaml.org,2002:null")
        kind_node = node
    elif node.kind == "map":
        typed = [(k, kn, v) for k, (kn, v) in node.entries.items() if k != "name"]
        if len(typed) != 1:
            if not typed:
                ctx.problems.add(node.pos, f"step has no type (one of: {', '.join(kinds)})")
            elif typed[0][0] in kinds and typed[0][2].is_null and all(k not in kinds for k, _, _ in typed[1:]):
                # "- menu:" then "prompt: ..." at the same column: the options became the step's keys.
                first, first_node, _ = typed[0]
                others = ", ".join(k for k, _, _ in typed[1:])
                ctx.problems.add(typed[1][1].pos, f"'{others}' must be indented under '{first}:' (options of a "
                                                   f"step go 2 spaces further in than '{first}', column "
                                                   f"{first_node.pos.col + 2})")
            else:
                ctx.problems.add(typed[1][1].pos, f"step has two types '{typed[0][0]}' and '{typed[1][0]}': "
                                                   "write one step per list item")
            return None
        kind, kind_node, value = typed[0]
    else:
        ctx.problems.add(node.pos, f"a step is a word (- answer) or a mapping (- play: welcome), "
                                    f"not {what_is(node)}")
        return None
    if kind not in kinds:
        close = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        ctx.problems.add(kind_node.pos, f"unknown step type '{kind}' ({hint}known: {', '.join(kinds)})")
        return None
    r = ctx.reader(kind, value, flow, names)
    r.step_label = step_name or f"{index}:{kind}"
    base: dict[str, Any] = {"name": step_name, "pos": node.pos, "index": index}
    parser = steps.PARSERS.get(kind)
    if parser is None:
        return _custom(ctx, kind, r, base)
    result: Step | None = parser(r, base)
    return result


def _custom(ctx: Sections, kind: str, r: StepReader, base: dict[str, Any]) -> Step | None:
    spec = registry.step_types()[kind]
    ctx.refs.stored.update(spec.stores)
    before = len(ctx.problems)
    try:
        config = spec.parse(r)
    except Exception as exc:  # a feature's parser must not take the whole check down
        r.error(f"'{kind}' could not be read: {exc}")
        return None
    if len(ctx.problems) > before:
        return None
    return Custom(**base, type_name=kind, config=config, step_targets=tuple(r.targets),
                  prompts=tuple(p for p in r.prompt_names if not is_media(p)), continues=not spec.ends_flow)
