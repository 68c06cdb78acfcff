"""The dialplan as frozen values: numbers and their routes, flows of steps, prompts, country rows.

Pure: no I/O, no asyncio. A call keeps the ``Dialplan`` object it started with; a reload builds
a new one, so nothing here is ever mutated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callctl.countries import Country, TimeWindow
from callctl.flows.calendars import Calendar, DateRange

LANGUAGES = ("en", "fr")
MEDIA_SCHEMES = ("sound", "digits", "number", "tone")
HANGUP_CAUSES = ("normal", "busy", "congestion", "no_answer", "timeout", "rejected", "unallocated",
                 "normal_unspecified", "number_incomplete", "codec_mismatch", "interworking", "failure",
                 "answered_elsewhere")
DIAL_STATUSES = ("answered", "busy", "noanswer", "congestion", "failed")
BUILTIN_VARIABLES = ("caller", "called", "language", "country", "dial_status", "caller_country", "visits")
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, order=True)
class Pos:
    """Where something was written: ``file`` relative to the dialplan directory, 1-based line/col."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# -- prompts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptVersion:
    """One language of a prompt: either stock media URIs or a text rendered to a wav file."""

    media: tuple[str, ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class Prompt:
    """A named prompt; ``versions`` maps a language (or "*" for every language) to its version."""

    name: str
    versions: Mapping[str, PromptVersion]
    pos: Pos

    def version(self, language: str) -> PromptVersion | None:
        return self.versions.get(language) or self.versions.get("*")

    def media(self, language: str) -> tuple[str, ...]:
        """ARI media URIs for ``language``; a text prompt is the wav that render-prompts wrote."""
        version = self.version(language)
        if version is None:
            raise KeyError(f"prompt '{self.name}' has no '{language}' version")
        if version.text is not None:
            return (f"sound:callctl/{language}/{self.name}",)
        return version.media


def template_variables(text: str) -> tuple[str, ...]:
    """Names used as ``{name}`` in a media URI or a value."""
    return tuple(_TEMPLATE_VAR.findall(text))


def fill_template(text: str, variables: Mapping[str, str]) -> str:
    """Replace ``{name}`` by the variable's value; a missing variable raises KeyError."""
    return _TEMPLATE_VAR.sub(lambda m: variables[m.group(1)], text)


def is_media(item: str) -> bool:
    """True for a literal media URI ("sound:x", "digits:{code}") rather than a prompt name."""
    scheme, sep, _ = item.partition(":")
    return bool(sep) and scheme in MEDIA_SCHEMES


# -- steps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Base of every step: ``name`` (for goto and logs, may be None), position, 1-based index."""

    name: str | None
    pos: Pos
    index: int

    kind = "step"

    @property
    def label(self) -> str:
        return self.name if self.name else f"{self.index}:{self.kind}"

    def targets(self) -> tuple[str, ...]:
        """Step names this step may jump to (same flow)."""
        return ()

    def falls_through(self) -> bool:
        """True when the step can continue with the next step."""
        return True

    def prompt_refs(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Answer(Step):
    kind = "answer"


@dataclass(frozen=True)
class Play(Step):
    prompts: tuple[str, ...] = ()
    interruptible: bool = True
    kind = "play"

    def prompt_refs(self) -> tuple[str, ...]:
        return self.prompts


@dataclass(frozen=True)
class Collect(Step):
    into: str = ""
    prompts: tuple[str, ...] = ()
    min_digits: int = 1
    max_digits: int = 20
    terminator: str = "#"
    timeout_s: float = 5.0
    digit_timeout_s: float = 3.0
    attempts: int = 3
    invalid: tuple[str, ...] = ()
    no_input: tuple[str, ...] = ()
    on_failure: str | None = None
    kind = "collect"

    def targets(self) -> tuple[str, ...]:
        return (self.on_failure,) if self.on_failure else ()

    def prompt_refs(self) -> tuple[str, ...]:
        return self.prompts + self.invalid + self.no_input


@dataclass(frozen=True)
class Menu(Step):
    prompts: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 5.0
    digit_timeout_s: float = 3.0
    attempts: int = 3
    invalid: tuple[str, ...] = ()
    no_input: tuple[str, ...] = ()
    on_failure: str | None = None
    kind = "menu"

    def targets(self) -> tuple[str, ...]:
        return tuple(self.options.values()) + ((self.on_failure,) if self.on_failure else ())

    def falls_through(self) -> bool:
        return self.on_failure is None  # no on_failure: hang up after the last attempt

    def prompt_refs(self) -> tuple[str, ...]:
        return self.prompts + self.invalid + self.no_input


@dataclass(frozen=True)
class SetVars(Step):
    values: Mapping[str, str] = field(default_factory=dict)
    kind = "set"


@dataclass(frozen=True)
class Goto(Step):
    target: str = ""
    kind = "goto"

    def targets(self) -> tuple[str, ...]:
        return (self.target,)

    def falls_through(self) -> bool:
        return False


@dataclass(frozen=True)
class GotoFlow(Step):
    flow: str = ""
    kind = "flow"

    def falls_through(self) -> bool:
        return False


@dataclass(frozen=True)
class HangUp(Step):
    cause: str = "normal"
    kind = "hangup"

    def falls_through(self) -> bool:
        return False


@dataclass(frozen=True)
class Dial(Step):
    target: str = ""
    timeout_s: float = 30.0
    caller_id: str | None = None
    branches: Mapping[str, str] = field(default_factory=dict)  # dial status -> step name
    kind = "dial"

    def targets(self) -> tuple[str, ...]:
        return tuple(self.branches.values())


@dataclass(frozen=True)
class Python(Step):
    function: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    kind = "python"


@dataclass(frozen=True)
class When(Step):
    """Inside when every condition given holds: the time window, today in one of ``calendars``,
    today in none of ``closed_on``, the day/night ``switch`` on."""

    window: TimeWindow | None = None  # None: the route country's canvassing window (if window_name)
    window_name: str = ""  # "" : no time window condition
    timezone: str | None = None  # None: the route country's time zone
    then: str | None = None
    otherwise: str | None = None
    calendars: tuple[str, ...] = ()
    dates: tuple[DateRange, ...] = ()
    closed_on: tuple[str, ...] = ()
    switch: str | None = None
    kind = "when"

    def targets(self) -> tuple[str, ...]:
        return tuple(t for t in (self.then, self.otherwise) if t)

    def falls_through(self) -> bool:
        return self.then is None or self.otherwise is None


@dataclass(frozen=True)
class Branch(Step):
    """Go to a step chosen by a value: an exact match, else the longest prefix, else the highest
    whole-number threshold the value reaches, else ``otherwise`` (None: the next step)."""

    value: str = ""  # a template: "{order}", "{caller_country}", "{visits}"
    equals: Mapping[str, str] = field(default_factory=dict)
    prefix: Mapping[str, str] = field(default_factory=dict)
    at_least: tuple[tuple[int, str], ...] = ()  # (threshold, step), highest first
    otherwise: str | None = None
    kind = "branch"

    def targets(self) -> tuple[str, ...]:
        return (*self.equals.values(), *self.prefix.values(), *(t for _, t in self.at_least),
                *((self.otherwise,) if self.otherwise else ()))

    def falls_through(self) -> bool:
        return self.otherwise is None

    def choose(self, value: str) -> tuple[str | None, str]:
        """The step to go to for ``value`` and why."""
        if value in self.equals:
            return self.equals[value], f"'{value}' equals '{value}'"
        for start in sorted(self.prefix, key=len, reverse=True):
            if value.startswith(start):
                return self.prefix[start], f"'{value}' starts with '{start}'"
        if value.isdigit():
            for threshold, target in self.at_least:
                if int(value) >= threshold:
                    return target, f"{value} is at least {threshold}"
        return self.otherwise, f"'{value}' matches no case"


@dataclass(frozen=True)
class Custom(Step):
    """A step of a type added through ``registry.register_step_type``."""

    type_name: str = ""
    config: Any = None
    step_targets: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    continues: bool = True
    kind = "custom"

    @property
    def label(self) -> str:
        return self.name if self.name else f"{self.index}:{self.type_name}"

    def targets(self) -> tuple[str, ...]:
        return self.step_targets

    def falls_through(self) -> bool:
        return self.continues

    def prompt_refs(self) -> tuple[str, ...]:
        return self.prompts


# -- flows, numbers, countries, the dialplan ----------------------------------------------------


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[Step, ...]
    pos: Pos

    def index_of(self, step_name: str) -> int:
        for i, step in enumerate(self.steps):
            if step.name == step_name:
                return i
        raise KeyError(step_name)


@dataclass(frozen=True)
class NumberPattern:
    """``X`` any digit, ``[1-5]``/``[137]`` one digit of a set, a trailing ``*`` any rest (even none).

    Every other character is literal. ``*`` alone matches every number (the catch-all).
    """

    text: str
    positions: tuple[frozenset[str], ...]
    open_ended: bool

    def matches(self, number: str) -> bool:
        if len(number) < len(self.positions):
            return False
        if not self.open_ended and len(number) != len(self.positions):
            return False
        return all(ch in allowed for ch, allowed in zip(number, self.positions, strict=False))

    @property
    def specificity(self) -> tuple[int, int]:
        """Higher wins: fixed length beats open-ended, then more literal characters."""
        literal = sum(1 for p in self.positions if len(p) == 1)
        return (0 if self.open_ended else 1, literal)

    def overlaps(self, other: NumberPattern) -> bool:
        """True when some number matches both patterns."""
        a, b = self.positions, other.positions
        if not self.open_ended and not other.open_ended and len(a) != len(b):
            return False
        if not self.open_ended and other.open_ended and len(b) > len(a):
            return False
        if not other.open_ended and self.open_ended and len(a) > len(b):
            return False
        return all(x & y for x, y in zip(a, b, strict=False))


@dataclass(frozen=True)
class OrganizerPaid:
    """numbers.yaml ``organizer_paid``: calls to the number draw the free-minutes pool of ``account``
    (issue 10, docs/minutes.md) instead of being the caller's own call."""

    account: str  # the organizer's account id (uuid text)
    local_number: str | None = None  # None: the conference's first access number that is not organizer-paid
    when_exhausted: str = "end"  # end | move
    warn_before_s: int = 60
    hold_s: int = 120  # seconds a leg holds on the pool at a time
    min_leg_s: int = 60  # a new leg is refused unless the pool can hold this much for it


@dataclass(frozen=True)
class NumberEntry:
    """One line of numbers.yaml: an exact E.164 ``number`` or a ``pattern``, routed to a flow."""

    flow: str
    language: str
    country: str
    tags: tuple[str, ...]
    pos: Pos
    number: str | None = None
    pattern: NumberPattern | None = None
    organizer_paid: OrganizerPaid | None = None

    @property
    def text(self) -> str:
        return self.number or (self.pattern.text if self.pattern else "")


@dataclass(frozen=True)
class Route:
    """Where a call goes: the flow, the language of its prompts, the country of the number called."""

    flow: str
    language: str
    country: str
    tags: tuple[str, ...]
    number: str  # the called number, E.164
    entry: str  # the numbers.yaml entry that matched (a number or a pattern)
    pos: Pos
    organizer_paid: OrganizerPaid | None = None


def normalise_called(called: str) -> str:
    """The called number as E.164: Asterisk may give "+33..." or "33..."; spaces are dropped."""
    text = "".join(called.split())
    if text and not text.startswith("+") and text.isdigit():
        return "+" + text
    return text


@dataclass(frozen=True)
class Switch:
    """A day/night switch an operator turns on or off at run time (``callctl dialplan switch``);
    ``default`` is its state until it is first switched, or when the store cannot be read."""

    name: str
    default: bool
    pos: Pos


@dataclass(frozen=True)
class Dialplan:
    version: str
    files: tuple[str, ...]
    numbers: tuple[NumberEntry, ...]
    flows: Mapping[str, Flow]
    prompts: Mapping[str, Prompt]
    countries: Mapping[str, Country]
    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    switches: Mapping[str, Switch] = field(default_factory=dict)

    def route(self, called: str) -> Route | None:
        """Exact numbers first, then the most specific matching pattern (see docs/dialplan.md)."""
        number = normalise_called(called)
        for entry in self.numbers:
            if entry.number is not None and entry.number in (number, called):
                return self._route(entry, number)
        best: NumberEntry | None = None
        for entry in self.numbers:
            if entry.pattern is not None and entry.pattern.matches(number):
                if best is None or (best.pattern is not None
                                    and entry.pattern.specificity > best.pattern.specificity):
                    best = entry
        return self._route(best, number) if best is not None else None

    @staticmethod
    def _route(entry: NumberEntry, number: str) -> Route:
        return Route(flow=entry.flow, language=entry.language, country=entry.country, tags=entry.tags,
                     number=number, entry=entry.text, pos=entry.pos, organizer_paid=entry.organizer_paid)

    def summary(self) -> str:
        steps = sum(len(f.steps) for f in self.flows.values())
        return (f"dialplan {self.version}: {len(self.files)} files, {len(self.numbers)} numbers, "
                f"{len(self.flows)} flows ({steps} steps), {len(self.prompts)} prompts, "
                f"{len(self.countries)} countries")

    def media(self, item: str, language: str) -> tuple[str, ...]:
        """Media URIs of one play item (a prompt name or a literal media URI), templates unfilled."""
        if is_media(item):
            return (item,)
        return self.prompts[item].media(language)
