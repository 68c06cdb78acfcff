"""Dialplan directory -> frozen ``Dialplan``: reads every YAML file safely, parses each section
(sections/), checks references across them (validate.py), and reports ALL problems in one
``DialplanError`` (each ``FILE:LINE:COL: message``).

Any ``*.yaml``/``*.yml`` file under the directory may hold any of the sections ``numbers``,
``flows``, ``prompts``, ``countries``, ``calendars`` and ``switches`` (the sample keeps one concern per file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType

from callctl.errors import DialplanError
from callctl.flows import registry, yamlsafe
from callctl.flows.files import dialplan_files
from callctl.flows.model import Dialplan
from callctl.flows.reader import SECTIONS, Sections
from callctl.flows.sections.calendars import parse_calendars, parse_switches
from callctl.flows.sections.countries import parse_countries
from callctl.flows.sections.flows import flow_nodes, parse_flow
from callctl.flows.sections.numbers import parse_numbers
from callctl.flows.sections.prompts import parse_prompts
from callctl.flows.validate import Endpoints, validate
from callctl.flows.yamlsafe import NodeBudget, decode, find_tabs, parse, read_bytes


def load_dialplan(directory: Path, *, endpoints: Endpoints | None = None) -> Dialplan:
    """Read and check the dialplan in ``directory``; DialplanError lists every problem found.
    ``endpoints``: the PJSIP endpoints dial steps' trunks must be among (None: not checked)."""
    registry.import_step_modules()
    directory = Path(directory)
    ctx = Sections()
    files = dialplan_files(directory, ctx.problems)
    digest = hashlib.sha256()
    budget = NodeBudget(yamlsafe.MAX_TOTAL_NODES)
    for rel, path in files:
        if budget.spent:
            break  # refused where the budget ran out; the files after it would only repeat that
        data = read_bytes(path, rel, ctx.problems)
        digest.update(rel.encode() + b"\0" + (data or b"") + b"\0")
        text = decode(data, rel, ctx.problems) if data is not None else None
        root = parse(text, rel, ctx.problems, budget) if text and not find_tabs(text, rel, ctx.problems) else None
        if root is None or root.kind != "map":
            if root is not None:
                ctx.problems.add(root.pos, f"a dialplan file is a mapping of sections ({', '.join(SECTIONS)})")
            # What this file defines is unknown: names it may define are not reported missing elsewhere.
            ctx.partial = ctx.partial or text != ""
            continue
        for key, (key_node, value) in root.entries.items():
            if key not in SECTIONS:
                ctx.problems.add(key_node.pos, f"unknown section '{key}' (valid: {', '.join(SECTIONS)})")
            else:
                ctx.sections[key].append((key_node, value))
    countries = parse_countries(ctx)
    calendars = parse_calendars(ctx)
    switches = parse_switches(ctx)
    prompts = parse_prompts(ctx)
    nodes = flow_nodes(ctx)
    numbers = parse_numbers(ctx, countries, set(nodes))
    flows = {name: parse_flow(ctx, name, key, node) for name, (key, node) in nodes.items()}
    plan = Dialplan(
        version=digest.hexdigest()[:12],
        files=tuple(rel for rel, _ in files),
        numbers=tuple(numbers),
        flows=MappingProxyType(flows),
        prompts=MappingProxyType(prompts),
        countries=MappingProxyType(countries),
        calendars=MappingProxyType(calendars),
        switches=MappingProxyType(switches),
    )
    validate(plan, ctx.refs, ctx.problems, endpoints, partial=ctx.partial)
    if len(ctx.problems):
        raise DialplanError(ctx.problems.render())
    return plan
