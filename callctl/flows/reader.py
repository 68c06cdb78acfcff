"""Reading the dialplan's YAML nodes into values: ``StepReader`` (position-aware helpers shared
by the section parsers and by step types that features register), the references to check once
everything is read (``Refs``) and the sections gathered from every file (``Sections``).
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from callctl.flows.model import LANGUAGES, MEDIA_SCHEMES, Pos, is_media, template_variables
from callctl.flows.yamlsafe import Node, Problems

SECTIONS = ("numbers", "flows", "prompts", "countries", "calendars", "switches")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PROMPT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DTMF = "0123456789*#ABCD"
MAX_TIMEOUT_S = 3600.0


def known(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"


@dataclass
class Refs:
    """References found while parsing, checked once everything is read (see validate.py)."""

    prompts: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, flow, prompt name)
    flows: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, from flow, to flow)
    variables: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, flow, variable)
    calendars: list[tuple[Pos, str]] = field(default_factory=list)  # (where, calendar name)
    trunks: list[tuple[Pos, str]] = field(default_factory=list)  # (where, PJSIP endpoint)
    dial_numbers: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, flow, number)
    switches: list[tuple[Pos, str]] = field(default_factory=list)  # (where, switch name)
    stored: set[str] = field(default_factory=set)  # variables some step sets


class StepReader:
    """Reads one step's YAML with position-aware helpers; also used by registered step types.

    ``node`` is the value under the step type's key. Every helper reports its own problem and
    returns None (or a default) when the value is wrong, so parsing goes on and finds the rest.
    """

    def __init__(self, kind: str, node: Node, flow: str, step_names: Sequence[str], problems: Problems,
                 refs: Refs) -> None:
        self.kind = kind
        self.node = node
        self.pos = node.pos
        self.flow = flow
        self.step_names = step_names
        self._problems = problems
        self._refs = refs
        self.targets: list[str] = []
        self.prompt_names: list[str] = []
        self.step_label = ""

    def error(self, message: str, node: Node | None = None) -> None:
        self._problems.add((node or self.node).pos, message)

    def mapping(self, allowed: Sequence[str], required: Sequence[str] = (),
                node: Node | None = None) -> dict[str, Node] | None:
        """The step's options as key -> node; unknown keys are reported with the valid choices."""
        node = node or self.node
        if node.kind != "map":
            self.error(f"'{self.kind}' expects options ({', '.join(allowed)}), not a {what_is(node)}", node)
            return None
        out: dict[str, Node] = {}
        for key, (key_node, value) in node.entries.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                self.error(f"unknown option '{key}' for '{self.kind}' ({hint}valid: {', '.join(allowed)})", key_node)
                continue
            out[key] = value
        for key in required:
            if key not in out:
                self.error(f"'{self.kind}' needs '{key}'", node)
        return out

    def text(self, node: Node | None, what: str, *, pattern: re.Pattern[str] | None = None,
             hint: str = "") -> str | None:
        if node is None:
            return None
        if node.kind != "scalar" or node.is_null:
            self.error(f"{what} must be a text value, not {what_is(node)}", node)
            return None
        if pattern is not None and not pattern.match(node.text):
            self.error(f"{what} '{node.text}' is not valid{hint}", node)
            return None
        if pattern is None and not node.text.strip():
            self.error(f"{what} is empty", node)
            return None
        return node.text

    def integer(self, node: Node | None, what: str, default: int, low: int, high: int) -> int:
        if node is None:
            return default
        try:
            value = int(node.text) if node.kind == "scalar" and not node.is_null else None
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            self.error(f"{what} must be a whole number from {low} to {high}, not '{node.text}'", node)
            return default
        return value

    def seconds(self, node: Node | None, what: str, default: float, high: float = MAX_TIMEOUT_S) -> float:
        if node is None:
            return default
        try:
            value = float(node.text) if node.kind == "scalar" and not node.is_null else None
        except ValueError:
            value = None
        if value is None or not 0 < value <= high or value != value:
            self.error(f"{what} must be a number of seconds above 0 and at most {high:g}, not '{node.text}'",
                       node)
            return default
        return value

    def boolean(self, node: Node | None, what: str, default: bool) -> bool:
        if node is None:
            return default
        value = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}.get(
            node.text.lower()) if node.kind == "scalar" else None
        if value is None:
            self.error(f"{what} must be true or false, not '{node.text}'", node)
            return default
        return value

    def prompts(self, node: Node | None, what: str = "prompt") -> tuple[str, ...]:
        """One prompt name or media URI, or a list of them; each is checked once all is read."""
        if node is None:
            return ()
        items = node.items if node.kind == "seq" else [node]
        out: list[str] = []
        for item in items:
            name = self.text(item, what)
            if name is None:
                continue
            if is_media(name):
                for var in template_variables(name):
                    self._refs.variables.append((item.pos, self.flow, var))
            elif ":" in name:
                scheme = name.partition(":")[0]
                self.error(f"{what} '{name}': unknown media '{scheme}:' (valid: "
                           f"{', '.join(s + ':' for s in MEDIA_SCHEMES)})", item)
                continue
            else:
                self._refs.prompts.append((item.pos, self.flow, name))
            out.append(name)
        if not out and node.kind == "seq":
            self.error(f"{what} list is empty", node)
        self.prompt_names.extend(out)
        return tuple(out)

    def target(self, node: Node | None, what: str) -> str | None:
        """A step name of this flow to jump to."""
        name = self.text(node, what)
        if name is None or node is None:
            return None
        if name not in self.step_names:
            self.error(f"step '{self._label()}' {what} unknown step '{name}'"
                       f"{suggest(name, (n for n in self.step_names if n))}", node)
            return None
        self.targets.append(name)
        return name

    def stores(self, *names: str) -> None:
        """Declare variables this step sets, so later ``{name}`` uses are known."""
        self._refs.stored.update(names)

    def variable(self, node: Node | None, what: str) -> str | None:
        name = self.text(node, what, pattern=VAR_RE, hint=" (letters, digits and _)")
        if name is not None:
            self._refs.stored.add(name)
        return name

    def template(self, node: Node | None, what: str) -> str | None:
        value = self.text(node, what)
        if value is not None and node is not None:
            for var in template_variables(value):
                self._refs.variables.append((node.pos, self.flow, var))
        return value

    def flow_ref(self, node: Node | None, what: str) -> str | None:
        name = self.text(node, what)
        if name is not None and node is not None:
            self._refs.flows.append((node.pos, self.flow, name))
        return name

    def refs_calendar(self, node: Node, name: str) -> None:
        self._refs.calendars.append((node.pos, name))

    def refs_trunk(self, node: Node, name: str) -> None:
        self._refs.trunks.append((node.pos, name))

    def refs_dial_number(self, node: Node, number: str) -> None:
        self._refs.dial_numbers.append((node.pos, self.flow, number))

    def refs_switch(self, node: Node, name: str) -> None:
        self._refs.switches.append((node.pos, name))

    def _label(self) -> str:
        return self.step_label or self.kind


def what_is(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    return "empty" if node.is_null else f"'{node.text}'"


def suggest(name: str, names: Iterable[str], limit: int = 12) -> str:
    """" (did you mean 'sales'?)" for a close name; else the known names when they are few,
    else how many there are (a list of 31 names teaches nothing)."""
    listed = sorted(set(names))
    close = difflib.get_close_matches(name, listed, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    if len(listed) <= limit:
        return f" (known: {known(listed)})"
    return f" ({len(listed)} are defined, none close to '{name}')"


class Sections:
    """The sections of every file of one dialplan, the problems found and the references seen."""

    def __init__(self) -> None:
        self.problems = Problems()
        self.refs = Refs()
        self.sections: dict[str, list[tuple[Node, Node]]] = {s: [] for s in SECTIONS}  # (key, value)
        self.partial = False  # a file could not be read: references across files are not checked

    def reader(self, kind: str, node: Node, flow: str = "", steps: Sequence[str] = ()) -> StepReader:
        return StepReader(kind, node, flow, steps, self.problems, self.refs)

    def named_entries(self, section: str, name_re: re.Pattern[str], hint: str) -> dict[str, tuple[Node, Node]]:
        """Entries of a mapping section across files; a name defined twice is a problem."""
        out: dict[str, tuple[Node, Node]] = {}
        for _, value in self.sections[section]:
            if value.is_null:
                continue
            if value.kind != "map":
                self.problems.add(value.pos, f"'{section}' is a mapping of name: definition, not {what_is(value)}")
                continue
            for name, (k, v) in value.entries.items():
                if not name_re.match(name):
                    self.problems.add(k.pos, f"{section[:-1]} name '{name}' is not valid{hint}")
                    continue
                if name in out:
                    self.problems.add(k.pos, f"{section[:-1]} '{name}' is defined twice (first at {out[name][0].pos})")
                    continue
                out[name] = (k, v)
        return out


def language(r: StepReader, node: Node | None) -> str | None:
    lang = r.text(node, "language")
    if lang is not None and lang not in LANGUAGES:
        r.error(f"unknown language '{lang}' (known: {', '.join(LANGUAGES)})", node)
        return None
    return lang


def valid_tz(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
