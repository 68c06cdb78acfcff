"""The per-call interface that flows and features drive; implemented over ARI by ``callctl.calls.call.Call``
(and without a phone by ``callctl.flows.simulate.FakeCall``). It is the only call type a feature sees.

Every awaitable raises ``callctl.errors.CallHungUp`` once the caller has hung up, so a flow never
checks for it: the supervisor records it as a normal end of call. No ARI error about the call's own
channel (``ChannelGone``) comes out of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from callctl.ari.events import ChannelInfo
from callctl.calls.result import CallResult, OutboundLeg
from callctl.ids import CallId


@dataclass(frozen=True)
class DialOutcome:
    """How a dial step ended: ``status`` is answered, busy, noanswer, congestion or failed."""

    status: str
    cause: int | None = None
    talk_s: float = 0.0


@dataclass(frozen=True)
class DialHooks:
    """Work a feature does while a dialled call is up (recording), inside the call's own task:
    ``on_bridged(bridge_id, caller_channel, leg_channel)`` once both are bridged, before talking;
    ``on_resumed(bridge_id, caller_channel, leg_channel)`` instead, when an engine restarted and takes
    back a call a previous engine bridged (``resume_bridged``);
    ``on_digit(channel_id, digit)`` for each DTMF key either side presses while talking."""

    on_bridged: Callable[[str, str, str], Awaitable[None]] | None = None
    on_digit: Callable[[str, str], Awaitable[None]] | None = None
    on_resumed: Callable[[str, str, str], Awaitable[None]] | None = None


class Authorization(Protocol):
    """Prepaid credit held before an outbound leg (callctl.billing.service.Authorization), as business lines
    and the dialer see it: ``allowed`` false means refused (``reason`` says why, for the caller);
    ``max_seconds`` the talk time the credit pays for; ``reservation_id`` the hold, settled at the end."""

    @property
    def max_seconds(self) -> int: ...
    @property
    def reservation_id(self) -> uuid.UUID | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def allowed(self) -> bool: ...


class CallPort(Protocol):
    call_id: CallId
    caller: str
    called: str
    language: str
    country: str | None  # ISO alpha-2 the numbers are read in, set by whoever routes the call
    args: tuple[str, ...]  # Stasis() arguments (extensions.conf, or an originate's appArgs)
    # Adopted after a restart while bridged with a leg a previous engine dialled: (leg, bridge id).
    resumed: tuple[ChannelInfo, str] | None
    result: CallResult  # what the handler says about the call, for its CDR

    @property
    def channel_id(self) -> str:
        """The call's own channel in Asterisk."""

    @property
    def channel_name(self) -> str:
        """Asterisk's name of that channel ("PJSIP/alice-0000002a": the endpoint that placed the call)."""

    @property
    def legs(self) -> Sequence[OutboundLeg]:
        """The legs this call dialled, in order (each gets its own CDR)."""

    async def answer(self) -> None:
        """Answer the channel (no-op when already answered)."""

    async def play(self, media: Sequence[str], *, interruptible: bool = True) -> str | None:
        """Play media URIs in order ("sound:hello-world", "tone:ring", "digits:42").

        When ``interruptible`` and a DTMF digit arrives, playback stops at once and the digit
        is returned; it also stays buffered so the next ``read_digit`` sees it (type-ahead).
        Returns None when everything played.
        """

    async def read_digit(self, timeout_s: float) -> str | None:
        """Next buffered DTMF digit ("0"-"9", "*", "#", "A"-"D"), waiting up to ``timeout_s``."""

    def clear_digits(self) -> None:
        """Forget buffered DTMF digits."""

    async def dial(self, target: str, *, timeout_s: float, caller_id: str | None = None,
                   max_talk_s: float | None = None, headers: dict[str, str] | None = None,
                   hooks: DialHooks | None = None, variables: dict[str, str] | None = None) -> DialOutcome:
        """Ring ``target`` (a PJSIP endpoint "PJSIP/alice" or trunk dial string), bridge on answer.

        ``max_talk_s``: the call is cut by Asterisk itself (TIMEOUT(absolute)) after that long,
        even if the engine dies; the caller hears a warning before the end. ``headers``: SIP headers
        added to the outgoing INVITE (e.g. the location of an emergency call). ``hooks``: work done
        while the call is up (recording). ``variables``: channel variables set on the new leg."""

    async def resume_bridged(self, target: str, *, caller_id: str | None = None,
                             hooks: DialHooks | None = None) -> DialOutcome:
        """Keep up the two-party call ``resumed`` names until either side hangs up, as ``dial`` would: with
        the warning before the limit the previous engine set in Asterisk, and ``hooks`` (recording)."""

    async def limit_talk(self, seconds: int) -> None:
        """Asterisk hangs the call up ``seconds`` from now, even if the engine dies."""

    async def hang_up(self, cause: str = "normal") -> None:
        """Hang up with an ARI reason: normal, busy, congestion, no_answer, unallocated, ..."""
