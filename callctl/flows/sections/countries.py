"""The ``countries`` section: ISO code -> ``Country`` (time zone, language, offered, emergency
numbers, canvassing hours)."""

from __future__ import annotations

import re

import phonenumbers

from callctl.countries import Country
from callctl.flows.reader import Sections, StepReader, valid_tz
from callctl.flows.reader import language as parse_language
from callctl.flows.sections.times import window
from callctl.flows.yamlsafe import Node


def parse_countries(ctx: Sections) -> dict[str, Country]:
    out: dict[str, Country] = {}
    regions = phonenumbers.SUPPORTED_REGIONS
    for code, (key, node) in ctx.named_entries("countries", re.compile(r"^[A-Z]{2}$"),
                                                  " (ISO 3166 alpha-2 in capitals, e.g. FR)").items():
        if code not in regions:
            ctx.problems.add(key.pos, f"country '{code}' is not an ISO 3166 alpha-2 code")
            continue
        r = ctx.reader(f"country {code}", node)
        opts = r.mapping(("name", "timezone", "language", "offered", "emergency", "canvassing"),
                         ("name", "timezone", "language"))
        if opts is None:
            continue
        tz = r.text(opts.get("timezone"), "timezone")
        if tz is not None and not valid_tz(tz):
            r.error(f"timezone '{tz}' is unknown (e.g. Europe/Paris)", opts["timezone"])
        language = parse_language(r, opts.get("language"))
        eligible = False
        numbers: tuple[str, ...] = ()
        if "emergency" in opts:
            em = r.mapping(("eligible", "numbers"), ("eligible", "numbers"), node=opts["emergency"])
            if em is not None:
                eligible = r.boolean(em.get("eligible"), "emergency eligible", False)
                numbers = _emergency_numbers(r, em.get("numbers"))
        canvassing = window(r, opts["canvassing"]) if "canvassing" in opts else None
        out[code] = Country(code=code, name=r.text(opts.get("name"), "name") or code, timezone=tz or "UTC",
                            language=language or "en", offered=r.boolean(opts.get("offered"), "offered", True),
                            emergency_eligible=eligible, emergency_numbers=numbers, canvassing=canvassing)
    return out


def _emergency_numbers(r: StepReader, node: Node | None) -> tuple[str, ...]:
    if node is None:
        return ()
    if node.kind != "seq":
        r.error("emergency numbers must be a list, e.g. [\"112\", \"15\"]", node)
        return ()
    out = []
    for item in node.items:
        value = r.text(item, "emergency number", pattern=re.compile(r"^[0-9]{2,6}$"), hint=" (2 to 6 digits)")
        if value is not None:
            out.append(value)
    return tuple(out)
