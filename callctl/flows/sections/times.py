"""Time windows in the dialplan: ``days: mon-fri`` and ``hours: ["10:00-13:00", ...]`` (``when``
steps, canvassing hours of the country table)."""

from __future__ import annotations

import datetime as dt
import re

from callctl.countries import WEEKDAYS, TimeWindow
from callctl.flows.reader import StepReader
from callctl.flows.yamlsafe import Node


def window(r: StepReader, node: Node, days_node: Node | None = None,
            hours_node: Node | None = None) -> TimeWindow | None:
    """``days: mon-fri`` and ``hours: ["10:00-13:00", ...]`` (either may be left out)."""
    if days_node is None and hours_node is None:
        opts = r.mapping(("days", "hours"), node=node)
        if opts is None:
            return None
        days_node, hours_node = opts.get("days"), opts.get("hours")
    days = parse_days(r, days_node) if days_node is not None else frozenset(range(7))
    hours: list[tuple[dt.time, dt.time]] = []
    if hours_node is not None:
        for item in hours_node.items if hours_node.kind == "seq" else [hours_node]:
            span = parse_span(item)
            if span is None:
                r.error(f"hours '{item.text}' must look like \"10:00-13:00\" (24 h clock, start before end; "
                        "quote it)", item)
            else:
                hours.append(span)
    if days is None:
        return None
    return TimeWindow(days=days, hours=tuple(hours))


def parse_days(r: StepReader, node: Node) -> frozenset[int] | None:
    texts = [i.text for i in node.items] if node.kind == "seq" else node.text.split(",")
    days: set[int] = set()
    for raw in texts:
        part = raw.strip().lower()[:7]
        lo, sep, hi = part.partition("-")
        names = [lo[:3], hi[:3]] if sep else [lo[:3]]
        if any(n not in WEEKDAYS for n in names) or not part:
            r.error(f"days '{raw.strip()}' must be weekday names like mon-fri or [mon, wed, sat]", node)
            return None
        a, b = WEEKDAYS.index(names[0]), WEEKDAYS.index(names[-1])
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def parse_span(node: Node) -> tuple[dt.time, dt.time] | None:
    if node.kind != "scalar":
        return None
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", node.text)
    if match is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2 == 0:
        h2, m2 = 23, 59
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60) or (h1, m1) >= (h2, m2):
        return None
    end = dt.time(h2, m2, 59, 999999) if (h2, m2) == (23, 59) else dt.time(h2, m2)
    return dt.time(h1, m1), end
