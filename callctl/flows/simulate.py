"""Dry run of a flow: a fake call that feeds scripted DTMF and answers dials as told, so an
operator sees each step taken and why, without a phone (``callctl dialplan simulate``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from callctl.ari.events import ChannelInfo
from callctl.calls.port import DialHooks, DialOutcome
from callctl.calls.result import CallResult, OutboundLeg
from callctl.errors import CallHungUp
from callctl.flows.engine import FlowResult, run_flow
from callctl.flows.model import Dialplan, Route
from callctl.flows.switches import SwitchReader, SwitchState
from callctl.ids import CallId

DTMF_KEYS = frozenset("0123456789*#ABCD")


@dataclass
class FakeCall:
    """A ``CallPort`` without a phone: ``digits`` are pressed as soon as a prompt starts (type-ahead),
    a read with no digit left times out at once, and hanging up after ``hang_up_after_plays``
    prompts raises ``CallHungUp`` like a real caller who puts the phone down.

    ``groups`` are what the caller keys at the following attempts, one group each: when the keys
    of the current group are used up, the next prompt or read starts the next group; after a
    wrong key the engine clears type-ahead, which drops only the rest of the current group."""

    caller: str = "+33100000000"
    called: str = ""
    language: str = "en"
    digits: deque[str] = field(default_factory=deque)
    groups: deque[str] = field(default_factory=deque)
    dropped: list[str] = field(default_factory=list)
    _in_group: bool = False
    dial_status: str = "answered"
    hang_up_after_plays: int | None = None
    call_id: CallId = field(default_factory=lambda: CallId("simulated"))
    log: list[str] = field(default_factory=list)
    hung_up: str | None = None
    answered: bool = False
    plays: int = 0
    country: str | None = None
    args: tuple[str, ...] = ()
    resumed: tuple[ChannelInfo, str] | None = None
    result: CallResult = field(default_factory=CallResult)
    legs: list[OutboundLeg] = field(default_factory=list)
    channel_id: str = "simulated"
    channel_name: str = "Simulated/simulated"

    async def answer(self) -> None:
        self.answered = True

    async def play(self, media: Sequence[str], *, interruptible: bool = True) -> str | None:
        self.plays += 1
        if self.hang_up_after_plays is not None and self.plays > self.hang_up_after_plays:
            self.log.append("caller hangs up during the prompt")
            raise CallHungUp("the caller hung up")
        self.log.append("play " + " ".join(media))
        if not self.digits:
            self._next_group()  # a prompt starts a new attempt: the caller keys the next group
        if interruptible and self.digits:
            return self.digits[0]
        return None

    async def read_digit(self, timeout_s: float) -> str | None:
        if not self.digits and not self._in_group:
            self._next_group()
        if self.digits:
            return self.digits.popleft()
        self._in_group = False  # the caller keyed the whole group and stopped: this read times out
        self.log.append(f"no key within {timeout_s:g} s")
        return None

    def clear_digits(self) -> None:
        if self.digits:
            self.dropped.append("".join(self.digits))
        self.digits.clear()
        self._in_group = False

    def _next_group(self) -> None:
        self._in_group = bool(self.groups)
        if self.groups:
            self.digits.extend(self.groups.popleft())

    def never_read(self) -> list[str]:
        """Keys no step read: dropped after a wrong key, then those left at the end."""
        out = [f"{keys} (dropped after a wrong key)" for keys in self.dropped]
        left = ["".join(self.digits)] if self.digits else []
        left += list(self.groups)
        if left:
            out.append(" ".join(left) + " (nothing asked for them)")
        return out

    async def dial(self, target: str, *, timeout_s: float, caller_id: str | None = None,
                   max_talk_s: float | None = None, headers: dict[str, str] | None = None,
                   hooks: DialHooks | None = None, variables: dict[str, str] | None = None) -> DialOutcome:
        self.log.append(f"dial {target} ({timeout_s:g} s) -> {self.dial_status}")
        return DialOutcome(self.dial_status, talk_s=60.0 if self.dial_status == "answered" else 0.0)

    async def resume_bridged(self, target: str, *, caller_id: str | None = None,
                             hooks: DialHooks | None = None) -> DialOutcome:
        return await self.dial(target, timeout_s=0, caller_id=caller_id)

    async def limit_talk(self, seconds: int) -> None:
        self.log.append(f"limit the call to {seconds} s")

    async def hang_up(self, cause: str = "normal") -> None:
        self.hung_up = cause


def parse_dtmf(text: str | Sequence[str]) -> deque[str]:
    """"2 1234#" or ["2", "1234#"] -> the groups of keys, one per attempt (commas ignored);
    ValueError on other characters."""
    words = text.split() if isinstance(text, str) else list(text)
    groups = deque("".join(ch.upper() for ch in word if ch != ",") for word in words)
    wrong = [k for group in groups for k in group if k not in DTMF_KEYS]
    if wrong:
        raise ValueError(f"'{''.join(wrong)}' are not phone keys (0-9 * # A-D)")
    return deque(g for g in groups if g)


@dataclass(frozen=True)
class _Overridden:
    """The store's switch states (when it can be read), with simulate's --switch on top."""

    store: SwitchReader | None
    fixed: Mapping[str, SwitchState]

    async def states(self) -> Mapping[str, SwitchState]:
        found = dict(await self.store.states()) if self.store is not None else {}
        return {**found, **self.fixed}


@dataclass(frozen=True)
class Simulation:
    route: Route | None
    result: FlowResult | None
    lines: tuple[str, ...]


async def simulate(plan: Dialplan, called: str, *, caller: str = "+33100000000", dtmf: str | Sequence[str] = "",
                   at: dt.datetime | None = None, dial_status: str = "answered",
                   switches: Mapping[str, bool] | None = None,
                   switch_reader: SwitchReader | None = None) -> Simulation:
    """Route ``called`` and run its flow on a FakeCall; ``lines`` is the human-readable trace.
    ``switches`` (simulate --switch) override what ``switch_reader`` (the store) says."""
    lines: list[str] = []
    route = plan.route(called)
    if route is None:
        lines.append(f"{called}: no number entry matches (the engine plays 'not in service' and hangs up)")
        return Simulation(None, None, tuple(lines))
    tags = ", ".join(route.tags) or "none"
    lines.append(f"{route.number} -> flow '{route.flow}' (entry {route.entry} at {route.pos}; language "
                 f"{route.language}, country {route.country}, tags {tags}; dialplan {plan.version})")
    call = FakeCall(caller=caller, called=called, language=route.language, groups=parse_dtmf(dtmf),
                    dial_status=dial_status)
    moment = at or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:  # a time without offset is the local time of the number's country
        country = plan.countries.get(route.country)
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(country.timezone if country else "UTC"))
    now: Callable[[], dt.datetime] = lambda: moment  # noqa: E731 - a frozen clock

    def trace(flow: str, step: str, why: str) -> None:
        lines.append(f"  [{flow}] {step}: {why or 'done'}")

    reader = _Overridden(switch_reader, {
        name: SwitchState(name, on, "simulate --switch", None) for name, on in (switches or {}).items()})
    try:
        result = await run_flow(plan, route, call, now=now, trace=trace, switch_reader=reader)
    except CallHungUp:
        lines.append("caller hung up")
        return Simulation(route, None, tuple(lines))
    if result.loop is not None:
        if call.never_read():
            lines.append("keys never read: " + ", ".join(call.never_read()))
        lines.append(f"stopped at the step limit ({result.steps_run} steps, last step '{result.last_step}'): the "
                     f"call went round {result.loop}; a real call ends there too, with the apology")
        return Simulation(route, result, tuple(lines))
    end = f"outcome {result.outcome} after {result.steps_run} steps (last step '{result.last_step}'"
    if call.hung_up:
        end += f", hang-up cause {call.hung_up}"
    if result.error:
        end += f", error: {result.error}"
    lines.append(end + ")")
    if call.never_read():
        lines.append("keys never read: " + ", ".join(call.never_read()))
    return Simulation(route, result, tuple(lines))
