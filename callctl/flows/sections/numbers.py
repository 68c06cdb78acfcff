"""The ``numbers`` section: exact E.164 numbers and patterns routed to flows, each with its
language, country and (for freephone access numbers) the organizer-paid terms."""

from __future__ import annotations

import re

import phonenumbers

from callctl.countries import Country
from callctl.flows.model import NumberEntry, NumberPattern, OrganizerPaid
from callctl.flows.phone import E164_RE, e164_problem
from callctl.flows.reader import NAME_RE, Sections, StepReader, known, suggest
from callctl.flows.reader import language as parse_language
from callctl.flows.yamlsafe import Node

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ORGANIZER_PAID_KEYS = ("account", "local_number", "when_exhausted", "warn_before", "hold", "min_leg")


def parse_numbers(ctx: Sections, countries: dict[str, Country], flow_names: set[str]) -> list[NumberEntry]:
    out: list[NumberEntry] = []
    for _, section in ctx.sections["numbers"]:
        if section.is_null:
            continue
        if section.kind != "seq":
            ctx.problems.add(section.pos, "'numbers' is a list of entries (- number: ... flow: ...)")
            continue
        for node in section.items:
            entry = _number(ctx, node, countries, flow_names)
            if entry is not None:
                out.append(entry)
    return out


def _number(ctx: Sections, node: Node, countries: dict[str, Country], flow_names: set[str]) -> NumberEntry | None:
    r = ctx.reader("number", node)
    opts = r.mapping(("number", "pattern", "flow", "language", "country", "tags", "organizer_paid"), ("flow",))
    if opts is None:
        return None
    if ("number" in opts) == ("pattern" in opts):
        r.error("a numbers entry needs exactly one of 'number' (E.164, e.g. \"+33900000001\") or 'pattern'")
        return None
    number = pattern = None
    code_node = opts.get("country")
    if "number" in opts:
        number = r.text(opts["number"], "number")
        if number is not None and not E164_RE.match(number):
            given = code_node.text if code_node is not None and code_node.kind == "scalar" else None
            hint = e164_problem(number, [given] if given else list(countries))
            r.error(f"number '{number}' {hint}", opts["number"])
            return None  # its country, flow and the rest would only repeat this
        literal = number
    else:
        pattern = parse_pattern(r, opts["pattern"])
        literal = _literal_prefix(pattern.text) if pattern else None
    flow = r.text(opts.get("flow"), "flow")
    if flow is not None and flow not in flow_names and not ctx.partial:
        r.error(f"number routes to unknown flow '{flow}'{suggest(flow, flow_names)}", opts["flow"])
    country_code = r.text(code_node, "country") if code_node else _country_of(literal)
    if country_code is None:
        if code_node is None:
            r.error("say which country this entry is in (country: FR)")
        return None
    country = countries.get(country_code)
    at = code_node or node
    if country is None:
        if ctx.partial:
            return None
        r.error(f"unknown country '{country_code}' (known: {known(countries)}; add it to countries.yaml)", at)
        return None
    if not country.offered:
        r.error(f"country {country_code} ({country.name}) is not offered (countries.yaml: offered: false)", at)
    language = parse_language(r, opts.get("language")) if "language" in opts else country.language
    tags: list[str] = []
    if "tags" in opts:
        tnode = opts["tags"]
        for item in tnode.items if tnode.kind == "seq" else [tnode]:
            tag = r.text(item, "tag", pattern=NAME_RE, hint=" (letters, digits, - and _)")
            if tag is not None:
                tags.append(tag)
    paid = None
    if "organizer_paid" in opts:
        if pattern is not None:
            r.error("organizer_paid is for one exact number (a freephone access number), not a pattern",
                    opts["organizer_paid"])
        paid = _organizer_paid(r, opts["organizer_paid"])
    if flow is None or language is None or (number is None and pattern is None):
        return None
    return NumberEntry(flow=flow, language=language, country=country_code, tags=tuple(tags), pos=node.pos,
                       number=number, pattern=pattern, organizer_paid=paid)


def _organizer_paid(r: StepReader, node: Node) -> OrganizerPaid | None:
    """``organizer_paid: {account: UUID, ...}``: calls draw that account's free-minutes pool."""
    opts = r.mapping(ORGANIZER_PAID_KEYS, ("account",), node=node)
    if opts is None:
        return None
    account = r.text(opts.get("account"), "organizer_paid account", pattern=UUID_RE,
                     hint=" (the organizer's account id, a uuid as printed by `callctl account create`)")
    local = r.text(opts.get("local_number"), "organizer_paid local_number", pattern=E164_RE,
                   hint=" (E.164: + then country code and number, no spaces; quote it)")
    when = r.text(opts.get("when_exhausted"), "organizer_paid when_exhausted") or "end"
    if when not in ("end", "move"):
        r.error(f"organizer_paid when_exhausted must be 'end' or 'move', not '{when}'", opts["when_exhausted"])
    hold = r.integer(opts.get("hold"), "organizer_paid hold (seconds)", 120, 1, 3600)
    warn = r.integer(opts.get("warn_before"), "organizer_paid warn_before (seconds)", 60, 0, 600)
    min_leg = r.integer(opts.get("min_leg"), "organizer_paid min_leg (seconds)", 60, 1, 3600)
    if account is None:
        return None
    return OrganizerPaid(account=account.lower(), local_number=local, when_exhausted=when, warn_before_s=warn,
                         hold_s=hold, min_leg_s=min_leg)


def parse_pattern(r: StepReader, node: Node) -> NumberPattern | None:
    text = r.text(node, "pattern")
    if text is None:
        return None
    positions: list[frozenset[str]] = []
    i, open_ended = 0, False
    digits = frozenset("0123456789")
    bad: str | None = None
    while i < len(text):
        ch = text[i]
        if ch == "*":
            if i != len(text) - 1:
                bad = "'*' may only end a pattern"
            open_ended = True
        elif ch == "X":
            positions.append(digits)
        elif ch == "[":
            end = text.find("]", i)
            inner = text[i + 1:end] if end > i else ""
            chosen = set()
            for m in re.finditer(r"(\d)-(\d)|(\d)", inner):
                if m.group(3):
                    chosen.add(m.group(3))
                else:
                    chosen.update(str(d) for d in range(int(m.group(1)), int(m.group(2)) + 1))
            if end < 0 or not chosen or re.fullmatch(r"(\d-\d|\d)+", inner) is None:
                bad = "write digit sets like [1-5] or [137]"
                break
            positions.append(frozenset(chosen))
            i = end
        elif ch.isdigit() or (ch == "+" and i == 0):
            positions.append(frozenset(ch))
        else:
            bad = f"'{ch}' is not allowed (digits, X, [1-5], and a final *)"
            break
        i += 1
    if bad is None and positions and positions[0] != frozenset("+") and text != "*":
        bad = "a pattern starts with + (E.164), or is * alone (every number)"
    if bad is not None:
        r.error(f"pattern '{text}': {bad}", node)
        return None
    return NumberPattern(text=text, positions=tuple(positions), open_ended=open_ended)


def _literal_prefix(text: str) -> str:
    return re.match(r"^\+?\d*", text).group(0) if text else ""  # type: ignore[union-attr]


def _country_of(literal: str | None) -> str | None:
    """ISO country of an E.164 prefix ("+33..." -> FR), or None if it does not say."""
    if not literal or not literal.startswith("+"):
        return None
    digits = literal[1:]
    for size in (1, 2, 3):
        if len(digits) >= size:
            region = phonenumbers.region_code_for_country_code(int(digits[:size]))
            if region != phonenumbers.UNKNOWN_REGION:
                return str(region)
    return None
