"""Dialplan directory -> frozen ``Dialplan``: reads every YAML file safely, checks the schema and
references, and reports ALL problems in one ``DialplanError`` (each ``FILE:LINE:COL: message``).

Any ``*.yaml``/``*.yml`` file under the directory may hold any of the sections ``numbers``,
``flows``, ``prompts`` and ``countries`` (the sample keeps one concern per file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import phonenumbers

from callctl.errors import DialplanError
from callctl.flows import registry, yamlsafe
from callctl.flows.model import (
    DIAL_STATUSES,
    HANGUP_CAUSES,
    LANGUAGES,
    MEDIA_SCHEMES,
    WEEKDAYS,
    Answer,
    Collect,
    Country,
    Custom,
    Dial,
    Dialplan,
    Flow,
    Goto,
    GotoFlow,
    HangUp,
    Menu,
    NumberEntry,
    NumberPattern,
    OrganizerPaid,
    Play,
    Pos,
    Prompt,
    PromptVersion,
    Python,
    SetVars,
    Step,
    TimeWindow,
    When,
    is_media,
    template_variables,
)
from callctl.flows.yamlsafe import MAX_FILE_BYTES, Node, NodeBudget, Problems, decode, find_tabs, parse, read_bytes

SECTIONS = ("numbers", "flows", "prompts", "countries")
BUILTIN_STEPS = ("answer", "play", "collect", "menu", "set", "goto", "flow", "hangup", "dial", "python", "when")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PROMPT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ORGANIZER_PAID_KEYS = ("account", "local_number", "when_exhausted", "warn_before", "hold", "min_leg")
DTMF = "0123456789*#ABCD"
MAX_TIMEOUT_S = 3600.0
MAX_FILES = 500
MAX_TOTAL_BYTES = 2 * MAX_FILE_BYTES  # checking is ~5 s per MiB on one core: keep `check` quick


def _known(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"


@dataclass
class Refs:
    """References found while parsing, checked once everything is read (see validate.py)."""

    prompts: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, flow, prompt name)
    flows: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, from flow, to flow)
    variables: list[tuple[Pos, str, str]] = field(default_factory=list)  # (where, flow, variable)
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
            self.error(f"'{self.kind}' expects options ({', '.join(allowed)}), not a {_what(node)}", node)
            return None
        out: dict[str, Node] = {}
        for key, (key_node, value) in node.entries.items():
            if key not in allowed:
                self.error(f"unknown option '{key}' for '{self.kind}' (valid: {', '.join(allowed)})", key_node)
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
            self.error(f"{what} must be a text value, not {_what(node)}", node)
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
            self.error(f"step '{self._label()}' {what} unknown step '{name}' "
                       f"(known: {_known(n for n in self.step_names if n)})", node)
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

    def _label(self) -> str:
        return self.step_label or self.kind


def _what(node: Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    return "empty" if node.is_null else f"'{node.text}'"


# -- the loader ---------------------------------------------------------------------------------


class _Loader:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.problems = Problems()
        self.refs = Refs()
        self.sections: dict[str, list[tuple[Node, Node]]] = {s: [] for s in SECTIONS}  # (key, value)

    def run(self) -> Dialplan:
        files = self._files()
        digest = hashlib.sha256()
        budget = NodeBudget(yamlsafe.MAX_TOTAL_NODES)
        for rel, path in files:
            if budget.spent:
                break  # refused where the budget ran out; the files after it would only repeat that
            data = read_bytes(path, rel, self.problems)
            digest.update(rel.encode() + b"\0" + (data or b"") + b"\0")
            if data is None:
                continue
            text = decode(data, rel, self.problems)
            if text is None or find_tabs(text, rel, self.problems):
                continue
            root = parse(text, rel, self.problems, budget)
            if root is None:
                continue
            if root.kind != "map":
                self.problems.add(root.pos, f"a dialplan file is a mapping of sections ({', '.join(SECTIONS)})")
                continue
            for key, (key_node, value) in root.entries.items():
                if key not in SECTIONS:
                    self.problems.add(key_node.pos, f"unknown section '{key}' (valid: {', '.join(SECTIONS)})")
                else:
                    self.sections[key].append((key_node, value))
        countries = self._countries()
        prompts = self._prompts()
        flow_nodes = self._flow_nodes()
        numbers = self._numbers(countries, set(flow_nodes))
        flows = {name: self._flow(name, key, node) for name, (key, node) in flow_nodes.items()}
        plan = Dialplan(
            version=digest.hexdigest()[:12],
            files=tuple(rel for rel, _ in files),
            numbers=tuple(numbers),
            flows=MappingProxyType(flows),
            prompts=MappingProxyType(prompts),
            countries=MappingProxyType(countries),
        )
        from callctl.flows.validate import validate

        validate(plan, self.refs, self.problems)
        if len(self.problems):
            raise DialplanError(self.problems.render())
        return plan

    def _files(self) -> list[tuple[str, Path]]:
        """The YAML files to read, as (name shown in problems, path), within the directory's budget.

        Symbolic links are never followed out of the directory: a link that leaves it is refused
        with where it points (its target is not read, so nothing of it can appear in a message).
        A link that stays inside is read once, under the name of the first path that reaches it.
        """
        if not self.directory.is_dir():
            raise DialplanError([f"{self.directory}:1:1: dialplan directory not found"])
        base = self.directory.name or str(self.directory)
        root = self.directory.resolve()
        found: dict[Path, tuple[str, Path]] = {}  # real path -> (shown name, path)
        links: list[tuple[str, Path]] = []
        for path in sorted(_walk(self.directory)):
            rel = f"{base}/{path.relative_to(self.directory).as_posix()}"
            if path.is_symlink():
                links.append((rel, path))
            elif path.suffix in (".yaml", ".yml"):
                if path.is_file():
                    found[path.resolve()] = (rel, path)
                else:
                    self.problems.add(Pos(rel, 1, 1), "not a regular file (a device, a pipe or a socket): refused")
        for rel, path in links:
            real = path.resolve()
            if not real.is_relative_to(root):
                target = os.readlink(path)
                shown = target if Path(target).is_absolute() and Path(target) == real else f"{target} ({real})"
                self.problems.add(Pos(rel, 1, 1), f"symbolic link to {shown} leaves the dialplan directory: "
                                                  "refused (copy the file into the directory instead)")
            elif path.suffix in (".yaml", ".yml") and real.is_file() and real not in found:
                found[real] = (rel, path)
        files = sorted(found.values())
        if len(files) > MAX_FILES:
            raise DialplanError([f"{base}:1:1: {len(files)} YAML files, more than the {MAX_FILES} files allowed "
                                 "in a dialplan directory"])
        total = sum(size for _, p in files if (size := _size(p)) <= MAX_FILE_BYTES)  # bigger: refused alone
        if total > MAX_TOTAL_BYTES:
            raise DialplanError([f"{base}:1:1: {total} bytes in all YAML files, more than the {MAX_TOTAL_BYTES} "
                                 "bytes allowed in a dialplan directory (nothing was read)"])
        if not files and not len(self.problems):
            raise DialplanError([f"{self.directory}:1:1: no .yaml files in the dialplan directory"])
        return files

    def _reader(self, kind: str, node: Node, flow: str = "", steps: Sequence[str] = ()) -> StepReader:
        return StepReader(kind, node, flow, steps, self.problems, self.refs)

    def _named_entries(self, section: str, name_re: re.Pattern[str], hint: str) -> dict[str, tuple[Node, Node]]:
        """Entries of a mapping section across files; a name defined twice is a problem."""
        out: dict[str, tuple[Node, Node]] = {}
        for _, value in self.sections[section]:
            if value.is_null:
                continue
            if value.kind != "map":
                self.problems.add(value.pos, f"'{section}' is a mapping of name: definition, not {_what(value)}")
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

    # -- countries ------------------------------------------------------------------------------

    def _countries(self) -> dict[str, Country]:
        out: dict[str, Country] = {}
        regions = phonenumbers.SUPPORTED_REGIONS
        for code, (key, node) in self._named_entries("countries", re.compile(r"^[A-Z]{2}$"),
                                                      " (ISO 3166 alpha-2 in capitals, e.g. FR)").items():
            if code not in regions:
                self.problems.add(key.pos, f"country '{code}' is not an ISO 3166 alpha-2 code")
                continue
            r = self._reader(f"country {code}", node)
            opts = r.mapping(("name", "timezone", "language", "offered", "emergency", "canvassing"),
                             ("name", "timezone", "language"))
            if opts is None:
                continue
            tz = r.text(opts.get("timezone"), "timezone")
            if tz is not None and not _valid_tz(tz):
                r.error(f"timezone '{tz}' is unknown (e.g. Europe/Paris)", opts["timezone"])
            language = self._language(r, opts.get("language"))
            eligible = False
            numbers: tuple[str, ...] = ()
            if "emergency" in opts:
                em = r.mapping(("eligible", "numbers"), ("eligible", "numbers"), node=opts["emergency"])
                if em is not None:
                    eligible = r.boolean(em.get("eligible"), "emergency eligible", False)
                    numbers = self._emergency_numbers(r, em.get("numbers"))
            canvassing = self._window(r, opts["canvassing"]) if "canvassing" in opts else None
            out[code] = Country(code=code, name=r.text(opts.get("name"), "name") or code, timezone=tz or "UTC",
                                language=language or "en", offered=r.boolean(opts.get("offered"), "offered", True),
                                emergency_eligible=eligible, emergency_numbers=numbers, canvassing=canvassing,
                                pos=key.pos)
        return out

    def _emergency_numbers(self, r: StepReader, node: Node | None) -> tuple[str, ...]:
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

    def _language(self, r: StepReader, node: Node | None) -> str | None:
        lang = r.text(node, "language")
        if lang is not None and lang not in LANGUAGES:
            r.error(f"unknown language '{lang}' (known: {', '.join(LANGUAGES)})", node)
            return None
        return lang

    def _window(self, r: StepReader, node: Node, days_node: Node | None = None,
                hours_node: Node | None = None) -> TimeWindow | None:
        """``days: mon-fri`` and ``hours: ["10:00-13:00", ...]`` (either may be left out)."""
        if days_node is None and hours_node is None:
            opts = r.mapping(("days", "hours"), node=node)
            if opts is None:
                return None
            days_node, hours_node = opts.get("days"), opts.get("hours")
        days = _parse_days(r, days_node) if days_node is not None else frozenset(range(7))
        hours: list[tuple[dt.time, dt.time]] = []
        if hours_node is not None:
            for item in hours_node.items if hours_node.kind == "seq" else [hours_node]:
                span = _parse_span(item)
                if span is None:
                    r.error(f"hours '{item.text}' must look like \"10:00-13:00\" (24 h clock, start before end; "
                            "quote it)", item)
                else:
                    hours.append(span)
        if days is None:
            return None
        return TimeWindow(days=days, hours=tuple(hours))

    # -- prompts --------------------------------------------------------------------------------

    def _prompts(self) -> dict[str, Prompt]:
        out: dict[str, Prompt] = {}
        for name, (key, node) in self._named_entries("prompts", PROMPT_RE,
                                                     " (lower-case letters, digits, - and _)").items():
            r = self._reader(f"prompt {name}", node)
            versions: dict[str, PromptVersion] = {}
            if node.kind == "map" and "text" not in node.entries:
                for lang, (lang_key, value) in node.entries.items():
                    if lang not in LANGUAGES:
                        r.error(f"prompt '{name}': unknown language '{lang}' (known: {', '.join(LANGUAGES)}); "
                                "give media for every language directly or one entry per language", lang_key)
                        continue
                    version = self._prompt_version(r, name, value)
                    if version is not None:
                        versions[lang] = version
            else:
                version = self._prompt_version(r, name, node)
                if version is not None:
                    if version.text is not None:
                        r.error(f"prompt '{name}': a text must say its language (en: {{text: ...}}, fr: ...)", node)
                    else:
                        versions["*"] = version
            if versions:
                out[name] = Prompt(name=name, versions=MappingProxyType(versions), pos=key.pos)
        return out

    def _prompt_version(self, r: StepReader, name: str, node: Node) -> PromptVersion | None:
        if node.kind == "map":
            opts = r.mapping(("text",), ("text",), node=node)
            text = r.text(opts.get("text"), f"prompt '{name}' text") if opts else None
            return PromptVersion(text=text) if text is not None else None
        media: list[str] = []
        for item in node.items if node.kind == "seq" else [node]:
            value = r.text(item, f"prompt '{name}'")
            if value is None:
                continue
            if not is_media(value):
                r.error(f"prompt '{name}': '{value}' is not media (sound:NAME, digits:123, number:42, tone:ring) "
                        "nor {text: ...}", item)
                continue
            if template_variables(value):
                r.error(f"prompt '{name}': variables like {{x}} go in flows, not in prompts", item)
                continue
            media.append(value)
        return PromptVersion(media=tuple(media)) if media else None

    # -- numbers --------------------------------------------------------------------------------

    def _numbers(self, countries: dict[str, Country], flow_names: set[str]) -> list[NumberEntry]:
        out: list[NumberEntry] = []
        for _, section in self.sections["numbers"]:
            if section.is_null:
                continue
            if section.kind != "seq":
                self.problems.add(section.pos, "'numbers' is a list of entries (- number: ... flow: ...)")
                continue
            for node in section.items:
                entry = self._number(node, countries, flow_names)
                if entry is not None:
                    out.append(entry)
        return out

    def _number(self, node: Node, countries: dict[str, Country], flow_names: set[str]) -> NumberEntry | None:
        r = self._reader("number", node)
        opts = r.mapping(("number", "pattern", "flow", "language", "country", "tags", "organizer_paid"), ("flow",))
        if opts is None:
            return None
        if ("number" in opts) == ("pattern" in opts):
            r.error("a numbers entry needs exactly one of 'number' (E.164, e.g. \"+33900000001\") or 'pattern'")
            return None
        number = pattern = None
        if "number" in opts:
            number = r.text(opts["number"], "number", pattern=E164_RE,
                            hint=" (E.164: + then country code and number, no spaces; quote it)")
            literal = number
        else:
            pattern = _parse_pattern(r, opts["pattern"])
            literal = _literal_prefix(pattern.text) if pattern else None
        flow = r.text(opts.get("flow"), "flow")
        if flow is not None and flow not in flow_names:
            r.error(f"number routes to unknown flow '{flow}' (known: {_known(flow_names)})", opts["flow"])
        code_node = opts.get("country")
        country_code = r.text(code_node, "country") if code_node else _country_of(literal)
        if country_code is None:
            if code_node is None:
                r.error("say which country this entry is in (country: FR)")
            return None
        country = countries.get(country_code)
        at = code_node or node
        if country is None:
            r.error(f"unknown country '{country_code}' (known: {_known(countries)}; add it to countries.yaml)", at)
            return None
        if not country.offered:
            r.error(f"country {country_code} ({country.name}) is not offered (countries.yaml: offered: false)", at)
        language = self._language(r, opts.get("language")) if "language" in opts else country.language
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
            paid = self._organizer_paid(r, opts["organizer_paid"])
        if flow is None or language is None or (number is None and pattern is None):
            return None
        return NumberEntry(flow=flow, language=language, country=country_code, tags=tuple(tags), pos=node.pos,
                           number=number, pattern=pattern, organizer_paid=paid)

    def _organizer_paid(self, r: StepReader, node: Node) -> OrganizerPaid | None:
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

    # -- flows ----------------------------------------------------------------------------------

    def _flow_nodes(self) -> dict[str, tuple[Node, Node]]:
        return self._named_entries("flows", NAME_RE, " (letters, digits, - and _)")

    def _flow(self, name: str, key: Node, node: Node) -> Flow:
        if node.kind != "seq" or not node.items:
            self.problems.add(node.pos, f"flow '{name}' must be a list of steps (- answer, - play: ...)")
            return Flow(name=name, steps=(), pos=key.pos)
        names: list[str] = []
        for item in node.items:
            step_name = None
            if item.kind == "map" and "name" in item.entries:
                _, name_node = item.entries["name"]
                step_name = self._reader("step", name_node).text(name_node, "step name", pattern=NAME_RE,
                                                                 hint=" (letters, digits, - and _)")
                if step_name is not None and step_name in names:
                    self.problems.add(name_node.pos, f"flow '{name}' has two steps named '{step_name}'")
            names.append(step_name or "")
        steps = []
        for index, item in enumerate(node.items, 1):
            step = self._step(name, names, index, item)
            if step is not None:
                steps.append(step)
        return Flow(name=name, steps=tuple(steps), pos=key.pos)

    def _step(self, flow: str, names: list[str], index: int, node: Node) -> Step | None:
        kinds = [*BUILTIN_STEPS, *registry.step_types()]
        step_name = names[index - 1] or None
        if node.kind == "scalar" and not node.is_null:
            kind, value = node.text, Node("scalar", node.pos, tag="tag:yaml.org,2002:null")
            kind_node = node
        elif node.kind == "map":
            typed = [(k, kn, v) for k, (kn, v) in node.entries.items() if k != "name"]
            if len(typed) != 1:
                if not typed:
                    self.problems.add(node.pos, f"step has no type (one of: {', '.join(kinds)})")
                else:
                    self.problems.add(typed[1][1].pos, f"step has two types '{typed[0][0]}' and '{typed[1][0]}': "
                                                       "write one step per list item")
                return None
            kind, kind_node, value = typed[0]
        else:
            self.problems.add(node.pos, f"a step is a word (- answer) or a mapping (- play: welcome), "
                                        f"not {_what(node)}")
            return None
        if kind not in kinds:
            self.problems.add(kind_node.pos, f"unknown step type '{kind}' (known: {', '.join(kinds)})")
            return None
        r = self._reader(kind, value, flow, names)
        r.step_label = step_name or f"{index}:{kind}"
        base: dict[str, Any] = {"name": step_name, "pos": node.pos, "index": index}
        parser = getattr(self, f"_step_{kind}", None)
        if parser is None:
            return self._custom(kind, r, base)
        result: Step | None = parser(r, base)
        return result

    def _no_options(self, r: StepReader) -> None:
        if not r.node.is_null:
            r.error(f"'{r.kind}' takes no options (write '- {r.kind}')")

    def _step_answer(self, r: StepReader, base: dict[str, Any]) -> Step:
        self._no_options(r)
        return Answer(**base)

    def _step_play(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        if r.node.kind == "map":
            opts = r.mapping(("prompt", "interruptible"), ("prompt",))
            if opts is None:
                return None
            prompts = r.prompts(opts.get("prompt"))
            interruptible = r.boolean(opts.get("interruptible"), "interruptible", True)
        else:
            if r.node.is_null:
                r.error("'play' needs a prompt (- play: welcome)")
                return None
            prompts, interruptible = r.prompts(r.node), True
        return Play(**base, prompts=prompts, interruptible=interruptible) if prompts else None

    def _step_collect(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        opts = r.mapping(("into", "prompt", "digits", "min_digits", "max_digits", "terminator", "timeout",
                          "digit_timeout", "attempts", "invalid", "no_input", "on_failure"), ("into",))
        if opts is None:
            return None
        into = r.variable(opts.get("into"), "into")
        exact = r.integer(opts.get("digits"), "digits", 0, 1, 64)
        if exact and ("min_digits" in opts or "max_digits" in opts):
            r.error("use 'digits' or 'min_digits'/'max_digits', not both", opts["digits"])
        low = r.integer(opts.get("min_digits"), "min_digits", exact or 1, 0, 64)
        high = r.integer(opts.get("max_digits"), "max_digits", exact or max(low, 20), 1, 64)
        if low > high:
            r.error(f"min_digits {low} is more than max_digits {high}", opts.get("min_digits"))
        terminator = "#"
        if "terminator" in opts:
            tnode = opts["terminator"]
            terminator = "" if tnode.is_null or tnode.text.lower() == "none" else tnode.text
            if terminator and (len(terminator) != 1 or terminator not in DTMF or terminator.isdigit()):
                r.error(f"terminator '{terminator}' must be one of * # A B C D, or none", tnode)
                terminator = "#"
        step = Collect(**base, into=into or "", prompts=r.prompts(opts.get("prompt")), min_digits=low,
                       max_digits=high, terminator=terminator,
                       timeout_s=r.seconds(opts.get("timeout"), "timeout", 5.0),
                       digit_timeout_s=r.seconds(opts.get("digit_timeout"), "digit_timeout", 3.0),
                       attempts=r.integer(opts.get("attempts"), "attempts", 3, 1, 10),
                       invalid=r.prompts(opts.get("invalid"), "invalid prompt"),
                       no_input=r.prompts(opts.get("no_input"), "no_input prompt"),
                       on_failure=r.target(opts.get("on_failure"), "on_failure goes to"))
        return step if into else None

    def _step_menu(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        opts = r.mapping(("prompt", "options", "timeout", "digit_timeout", "attempts", "invalid", "no_input",
                          "on_failure"), ("prompt", "options"))
        if opts is None:
            return None
        options: dict[str, str] = {}
        onode = opts.get("options")
        if onode is not None and onode.kind != "map":
            r.error("menu options map keys to steps (1: sales)", onode)
        elif onode is not None:
            keys: dict[str, Node] = {}
            for key, (key_node, target_node) in onode.entries.items():
                if not key or any(ch not in DTMF for ch in key):
                    r.error(f"menu key '{key}' must be keys of the phone (0-9 * # A-D; quote \"*\" and \"#\")",
                            key_node)
                    continue
                target = r.target(target_node, f"routes '{key}' to")
                keys[key] = key_node
                if target is not None:
                    options[key] = target
            for key, key_node in keys.items():
                for other in keys:
                    if other != key and key.startswith(other):
                        r.error(f"menu key '{key}' can never be chosen: '{other}' is chosen as soon as it is "
                                "pressed", key_node)
        step = Menu(**base, prompts=r.prompts(opts.get("prompt")), options=MappingProxyType(options),
                    timeout_s=r.seconds(opts.get("timeout"), "timeout", 5.0),
                    digit_timeout_s=r.seconds(opts.get("digit_timeout"), "digit_timeout", 3.0),
                    attempts=r.integer(opts.get("attempts"), "attempts", 3, 1, 10),
                    invalid=r.prompts(opts.get("invalid"), "invalid prompt"),
                    no_input=r.prompts(opts.get("no_input"), "no_input prompt"),
                    on_failure=r.target(opts.get("on_failure"), "on_failure goes to"))
        return step if options else None

    def _step_set(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        if r.node.kind != "map" or not r.node.entries:
            r.error("'set' maps variable names to values (- set: {team: sales})")
            return None
        values: dict[str, str] = {}
        for var, (key_node, value_node) in r.node.entries.items():
            if r.variable(key_node, "variable") is None:
                continue
            value = "" if value_node.is_null else r.template(value_node, f"value of '{var}'")
            if value is not None:
                values[var] = value
        return SetVars(**base, values=MappingProxyType(values))

    def _step_goto(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        target = r.target(r.node, "goes to")
        return Goto(**base, target=target) if target else None

    def _step_flow(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        flow = r.flow_ref(r.node, "flow")
        return GotoFlow(**base, flow=flow) if flow else None

    def _step_hangup(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        cause = "normal" if r.node.is_null else r.text(r.node, "hangup cause")
        if cause is not None and cause not in HANGUP_CAUSES:
            r.error(f"unknown hangup cause '{cause}' (known: {', '.join(HANGUP_CAUSES)})")
            return None
        return HangUp(**base, cause=cause or "normal")

    def _step_dial(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        opts = r.mapping(("user", "trunk", "number", "to", "timeout", "caller_id", *DIAL_STATUSES))
        if opts is None:
            return None
        target: str | None = None
        if "user" in opts and not {"trunk", "number", "to"} & opts.keys():
            user = r.template(opts["user"], "user")
            target = f"PJSIP/{user}" if user else None
        elif {"trunk", "number"} <= opts.keys() and not {"user", "to"} & opts.keys():
            trunk = r.text(opts["trunk"], "trunk", pattern=NAME_RE, hint=" (letters, digits, - and _)")
            number = r.template(opts["number"], "number")
            target = f"PJSIP/{number}@{trunk}" if trunk and number else None
        elif "to" in opts and not {"user", "trunk", "number"} & opts.keys():
            target = r.template(opts["to"], "to")
            if target is not None and "/" not in target:
                r.error(f"'to: {target}' must be an Asterisk dial string like PJSIP/alice", opts["to"])
                target = None
        else:
            r.error("'dial' needs either 'user: NAME' (a SIP user), 'trunk: NAME' with 'number: ...', "
                    "or 'to: PJSIP/...'")
        caller_id = r.template(opts.get("caller_id"), "caller_id")
        branches: dict[str, str] = {}
        for status in DIAL_STATUSES:
            goto = r.target(opts.get(status), f"on {status} goes to")
            if goto is not None:
                branches[status] = goto
        timeout_s = r.seconds(opts.get("timeout"), "timeout", 30.0, high=600.0)
        if target is None:
            return None
        return Dial(**base, target=target, timeout_s=timeout_s, caller_id=caller_id,
                    branches=MappingProxyType(branches))

    def _step_python(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        args: dict[str, Any] = {}
        if r.node.kind == "map":
            opts = r.mapping(("function", "args"), ("function",))
            if opts is None:
                return None
            fnode = opts.get("function")
            if "args" in opts:
                plain = opts["args"].plain()
                if not isinstance(plain, dict):
                    r.error("python args must be a mapping (args: {key: value})", opts["args"])
                else:
                    args = plain
        else:
            fnode = r.node
        function = r.text(fnode, "python step")
        if function is None or fnode is None:
            return None
        known = registry.python_steps()
        if function not in known:
            r.error(f"unknown python step '{function}' (known: {_known(known)})", fnode)
            return None
        return Python(**base, function=function, args=MappingProxyType(args))

    def _step_when(self, r: StepReader, base: dict[str, Any]) -> Step | None:
        opts = r.mapping(("window", "days", "hours", "timezone", "then", "else"))
        if opts is None:
            return None
        window: TimeWindow | None = None
        window_name = ""
        if "window" in opts:
            window_name = r.text(opts["window"], "window") or ""
            if window_name != "canvassing":
                r.error(f"unknown window '{window_name}' (known: canvassing, from the country table)", opts["window"])
            if "days" in opts or "hours" in opts:
                r.error("give either 'window' or 'days'/'hours', not both", opts["window"])
        elif "days" in opts or "hours" in opts:
            window = self._window(r, r.node, opts.get("days"), opts.get("hours"))
            window_name = "days/hours"
        else:
            r.error("'when' needs 'days' and/or 'hours' (or window: canvassing)")
        tz = r.text(opts.get("timezone"), "timezone")
        if tz is not None and not _valid_tz(tz):
            r.error(f"timezone '{tz}' is unknown (e.g. Europe/Paris)", opts["timezone"])
        then = r.target(opts.get("then"), "then goes to")
        otherwise = r.target(opts.get("else"), "else goes to")
        if "then" not in opts and "else" not in opts:
            r.error("'when' needs 'then' and/or 'else' (a step to go to)")
        return When(**base, window=window, window_name=window_name, timezone=tz, then=then, otherwise=otherwise)

    def _custom(self, kind: str, r: StepReader, base: dict[str, Any]) -> Step | None:
        spec = registry.step_types()[kind]
        self.refs.stored.update(spec.stores)
        before = len(self.problems)
        try:
            config = spec.parse(r)
        except Exception as exc:  # a feature's parser must not take the whole check down
            r.error(f"'{kind}' could not be read: {exc}")
            return None
        if len(self.problems) > before:
            return None
        return Custom(**base, type_name=kind, config=config, step_targets=tuple(r.targets),
                      prompts=tuple(p for p in r.prompt_names if not is_media(p)), continues=not spec.ends_flow)


# -- small parsers ------------------------------------------------------------------------------


def _valid_tz(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _parse_days(r: StepReader, node: Node) -> frozenset[int] | None:
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


def _parse_span(node: Node) -> tuple[dt.time, dt.time] | None:
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


def _parse_pattern(r: StepReader, node: Node) -> NumberPattern | None:
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


def _walk(directory: Path) -> list[Path]:
    """Every path under ``directory``; symbolic links are listed, never descended into."""
    out: list[Path] = []
    for top, dirs, names in os.walk(directory, followlinks=False):
        here = Path(top)
        out.extend(here / name for name in names)
        out.extend(here / name for name in dirs if (here / name).is_symlink())
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # read_bytes reports it


def load_dialplan(directory: Path) -> Dialplan:
    """Read and check the dialplan in ``directory``; DialplanError lists every problem found."""
    return _Loader(Path(directory)).run()
