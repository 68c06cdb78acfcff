"""The ``calendars`` section (named closed days: public holidays, dates, date ranges) and the
``switches`` section (day/night switches turned on and off at run time)."""

from __future__ import annotations

import datetime as dt
import re

from callctl.flows.calendars import PUBLIC_HOLIDAYS, Calendar, DateRange, holiday_countries
from callctl.flows.model import Switch
from callctl.flows.reader import NAME_RE, Sections, StepReader
from callctl.flows.yamlsafe import Node

_DATE = r"(?:(\d{4})-)?(\d{2})-(\d{2})"
_RANGE = re.compile(rf"^\s*{_DATE}\s*(?:\.\.\s*{_DATE}\s*)?$")
DATE_HINT = ("dates look like \"2026-12-24\", a range \"2026-12-24..2026-12-26\", or every year "
             "\"12-25\" / \"12-24..12-26\" (quote them)")


def parse_dates(r: StepReader, node: Node | None) -> tuple[DateRange, ...]:
    """One date or range, or a list of them."""
    if node is None:
        return ()
    out: list[DateRange] = []
    for item in node.items if node.kind == "seq" else [node]:
        text = item.text.strip() if item.kind == "scalar" and not item.is_null else ""
        span = _date_range(text)
        if span is None:
            r.error(f"date '{text or what(item)}' is not valid: {DATE_HINT}", item)
        else:
            out.append(span)
    return tuple(out)


def what(node: Node) -> str:
    return "a list" if node.kind == "seq" else "a mapping" if node.kind == "map" else "empty"


def _date_range(text: str) -> DateRange | None:
    m = _RANGE.match(text)
    if m is None:
        return None
    y1, m1, d1, y2, m2, d2 = m.groups()
    if m2 is None:
        y2, m2, d2 = y1, m1, d1
    if (y1 is None) != (y2 is None):
        return None  # "2026-12-24..12-26": say the year on both sides or on neither
    yearly = y1 is None
    try:
        # 2000 is a leap year, so "02-29" is a valid yearly date.
        first = dt.date(int(y1 or 2000), int(m1), int(d1))
        last = dt.date(int(y2 or 2000), int(m2), int(d2))
    except ValueError:
        return None
    if not yearly and last < first:
        return None
    return DateRange(first, last, yearly, text)


def parse_calendars(ctx: Sections) -> dict[str, Calendar]:
    out: dict[str, Calendar] = {}
    supported = holiday_countries()
    for name, (key, node) in ctx.named_entries("calendars", NAME_RE, " (letters, digits, - and _)").items():
        r = ctx.reader(f"calendar {name}", node)
        if name == PUBLIC_HOLIDAYS:
            r.error(f"'{PUBLIC_HOLIDAYS}' is the built-in calendar of the number's country's public holidays: "
                    "give yours another name", key)
            continue
        opts = r.mapping(("holidays", "dates"))
        if opts is None:
            continue
        countries: list[str] = []
        hnode = opts.get("holidays")
        if hnode is not None:
            if hnode.kind == "scalar" and hnode.text.lower() in ("true", "yes", "on"):
                countries.append("")
            else:
                for item in hnode.items if hnode.kind == "seq" else [hnode]:
                    code = r.text(item, "holidays country")
                    if code is None:
                        continue
                    if code not in supported:
                        r.error(f"no public holidays known for '{code}' (an ISO 3166 alpha-2 code in capitals, "
                                "e.g. FR; or true for the country of the number called)", item)
                        continue
                    countries.append(code)
        dates = parse_dates(r, opts.get("dates"))
        if not opts:
            r.error(f"calendar '{name}' needs 'holidays' (e.g. FR) and/or 'dates'")
            continue
        out[name] = Calendar(name=name, countries=tuple(countries), dates=dates)
    return out


def parse_switches(ctx: Sections) -> dict[str, Switch]:
    out: dict[str, Switch] = {}
    for name, (key, node) in ctx.named_entries("switches", NAME_RE, " (letters, digits, - and _)").items():
        r = ctx.reader(f"switch {name}", node)
        if node.is_null:
            out[name] = Switch(name=name, default=False, pos=key.pos)
            continue
        opts = r.mapping(("default",))
        if opts is None:
            continue
        out[name] = Switch(name=name, default=r.boolean(opts.get("default"), "default", False), pos=key.pos)
    return out
