"""One call leg driven over ARI: the ``CallPort`` that flows use.

The call task is the only reader of its mailbox. DTMF is buffered (type-ahead), hang-up is
remembered and raised as ``CallHungUp`` at the next await, playback completion wakes ``play``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

from callctl.ari.dispatch import Mailbox
from callctl.ari.events import (
    ChannelDestroyed,
    ChannelInfo,
    DtmfReceived,
    Event,
    HangupRequest,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
)
from callctl.calls.lifecycle import Lifecycle, dial_status
from callctl.calls.port import DialHooks, DialOutcome
from callctl.calls.result import CallResult, OutboundLeg
from callctl.errors import AriError, CallEnded, CallHungUp, ChannelGone
from callctl.ids import CallId, ChannelId
from callctl.logging import get_logger

log = get_logger("callctl.calls")

# ARI hang-up reasons -> the Q.850 cause the CDR records when the engine hangs up.
HANGUP_CAUSES = {"normal": 16, "busy": 17, "no_answer": 19, "timeout": 19, "rejected": 21, "unallocated": 1,
                 "congestion": 34, "normal_unspecified": 31, "number_incomplete": 28, "codec_mismatch": 58,
                 "interworking": 127, "failure": 38, "answered_elsewhere": 26}

# How long before a paid call's limit the caller hears a warning beep.
LIMIT_WARNING_S = 10.0

# An upper bound on any single prompt: a playback whose PlaybackFinished never arrives (lost
# websocket) must not hold the call forever.
MAX_PLAYBACK_S = 600.0


class ChannelOps(Protocol):
    """The ARI operations a call needs (implemented by callctl.ari.client.AriClient)."""

    async def answer(self, channel_id: str) -> None: ...
    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None: ...
    async def stop_playback(self, playback_id: str) -> None: ...
    async def hang_up(self, channel_id: str, reason: str = "normal") -> None: ...
    async def set_var(self, channel_id: str, name: str, value: str) -> None: ...


class DialOps(ChannelOps, Protocol):
    """What ``Call.dial`` needs on top: an outbound leg and a bridge."""

    async def originate(self, channel_id: str, endpoint: str, *, timeout_s: float, caller_id: str | None,
                        variables: dict[str, str] | None = None) -> None: ...
    async def ring(self, channel_id: str, ringing: bool) -> None: ...
    async def create_bridge(self, bridge_id: str, name: str) -> None: ...
    async def add_to_bridge(self, bridge_id: str, channel_id: str) -> None: ...
    async def destroy_bridge(self, bridge_id: str) -> None: ...
    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...  # a leg resumed after a restart
    async def get_var(self, channel_id: str, name: str) -> str | None: ...


CALL_BRIDGE_PREFIX = "call-"  # a two-party bridge is named after the leg the call dialled


def _seconds(value: str | None) -> float | None:
    """TIMEOUT(absolute) as read back: seconds left ("12.345"), "0" or nothing when no limit is set."""
    try:
        left = float(value or 0)
    except ValueError:
        return None
    return left if left > 0 else None


class Call:
    def __init__(self, ops: ChannelOps, channel: ChannelInfo, mailbox: Mailbox, *, language: str = "en",
                 register_leg: Callable[[ChannelId, bool], None] | None = None,
                 args: tuple[str, ...] = (), on_answer: Callable[[dt.datetime], None] | None = None,
                 answered_at: dt.datetime | None = None, on_dial: Callable[[ChannelId], None] | None = None) -> None:
        """``answered_at``: a call adopted after a restart, answered by a previous engine (its journal).
        ``on_dial``: told of each leg's channel id before it is originated (the open-calls journal)."""
        self.call_id = CallId(str(uuid.uuid4()))
        self.channel = channel
        self.caller = channel.caller_number
        self.called = channel.exten
        self.language = language
        self.country: str | None = None  # ISO alpha-2 of the number called, set from the route
        self.result = CallResult()  # what the call's handler says about it, for its CDR
        self.lifecycle = Lifecycle(started_at=channel.created_at)
        # Adopted after a restart while bridged with a leg a previous engine dialled: (leg, bridge id).
        self.resumed: tuple[ChannelInfo, str] | None = None
        if answered_at is not None:
            self.lifecycle.answered(answered_at)
        self._ops = ops
        self._mailbox = mailbox
        self._digits: collections.deque[str] = collections.deque()
        self._gone = False  # the channel has left Stasis or been hung up
        self._register_leg = register_leg
        self.args = args  # Stasis() arguments from extensions.conf, e.g. ("line-outbound",)
        self._on_answer = on_answer
        self._on_dial = on_dial
        self.legs: list[OutboundLeg] = []
        self.ended = asyncio.Event()

    @property
    def channel_id(self) -> str:
        return self.channel.id

    @property
    def channel_name(self) -> str:
        return self.channel.name

    # -- event intake --------------------------------------------------------------------------

    def _absorb(self, event: Event) -> None:
        """Apply an event's facts about this call's own channel; every wait goes through here.

        Events of an outbound leg share the mailbox; they are returned to the dial loop untouched.
        """
        if getattr(event, "channel_id", self.channel.id) != self.channel.id:
            return
        if isinstance(event, DtmfReceived):
            self._digits.append(event.digit)
        elif isinstance(event, HangupRequest):
            self.lifecycle.hangup_requested("caller", event.cause)
            self._gone = True
        elif isinstance(event, StasisEnd):
            # The last event Asterisk sends an app for a channel it hangs up (no ChannelDestroyed
            # follows once the channel has left the app), so it marks the end of the leg.
            self.lifecycle.ended(event.at, None, "left the application")
            self._gone = True
            self.ended.set()
        elif isinstance(event, ChannelDestroyed):
            self.lifecycle.ended(event.at, event.cause, event.cause_txt)
            self._gone = True
            self.ended.set()

    def _check_up(self) -> None:
        if self._gone:
            raise CallHungUp(f"call {self.call_id}: channel {self.channel.id} hung up")

    async def _next_event(self, timeout_s: float) -> Event | None:
        """Next event within ``timeout_s`` (None on timeout); raises CallHungUp once the call is gone."""
        self._check_up()
        try:
            async with asyncio.timeout(timeout_s):
                event = await self._mailbox.get()
        except TimeoutError:
            return None
        self._absorb(event)
        self._check_up()
        return event

    async def wait_for_mailbox(self) -> None:
        """Wait for one event and absorb it, without raising (used while closing the call)."""
        self._absorb(await self._mailbox.get())

    async def wait_for_end(self, timeout_s: float) -> None:
        """Asterisk's own end of the channel (after a hang-up), within ``timeout_s``; never raises."""
        self.drain_mailbox()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self.ended.is_set():
                    await self.wait_for_mailbox()

    def deliver(self, event: Event) -> None:
        """An event the engine itself knows of (resync: the channel vanished while the socket was down)."""
        self._mailbox.put_nowait(event)

    def drain_mailbox(self) -> None:
        """Absorb every queued event without waiting (used at the end of the call)."""
        while not self._mailbox.empty():
            self._absorb(self._mailbox.get_nowait())

    # -- CallPort ------------------------------------------------------------------------------

    async def answer(self) -> None:
        self._check_up()
        if self.lifecycle.answered_at is not None:
            return
        try:
            await self._ops.answer(self.channel.id)
            answered_at = dt.datetime.now(dt.UTC)
            self.lifecycle.answered(answered_at)
            if self._on_answer is not None:
                # The open-calls journal keeps it: an engine restarted mid-call bills from the true
                # answer time (no channel variable in Asterisk: one REST request less per call).
                self._on_answer(answered_at)
        except ChannelGone:
            self._gone = True
            self._check_up()

    async def play(self, media: Sequence[str], *, interruptible: bool = True) -> str | None:
        self._check_up()
        if interruptible and self._digits:
            return self._digits[0]
        playback_id = str(uuid.uuid4())
        try:
            await self._ops.play(self.channel.id, list(media), playback_id, self.language)
        except ChannelGone:
            self._gone = True
            self._check_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_PLAYBACK_S
        while True:
            event = await self._next_event(max(0.0, deadline - loop.time()))
            if event is None:
                await self._ops.stop_playback(playback_id)
                return None
            if isinstance(event, PlaybackFinished) and event.playback_id == playback_id:
                return None
            if interruptible and isinstance(event, DtmfReceived):
                await self._ops.stop_playback(playback_id)
                return event.digit

    async def read_digit(self, timeout_s: float) -> str | None:
        self._check_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._digits:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self._next_event(remaining)
        return self._digits.popleft()

    def clear_digits(self) -> None:
        self._digits.clear()

    async def dial(self, target: str, *, timeout_s: float, caller_id: str | None = None,
                   max_talk_s: float | None = None, headers: dict[str, str] | None = None,
                   hooks: DialHooks | None = None, variables: dict[str, str] | None = None) -> DialOutcome:
        with self._channels_of_this_call():
            return await self._dial(target, timeout_s=timeout_s, caller_id=caller_id, max_talk_s=max_talk_s,
                                    headers=headers, hooks=hooks, variables=variables)

    @contextlib.contextmanager
    def _channels_of_this_call(self) -> Iterator[None]:
        """ARI's "no such channel" about this call's channels stops here: the call is over (the port's
        promise); whoever closes the call hangs up what is left."""
        try:
            yield
        except ChannelGone as exc:
            raise CallEnded(f"call {self.call_id}: {exc.message}") from None

    async def _dial(self, target: str, *, timeout_s: float, caller_id: str | None,
                    max_talk_s: float | None, headers: dict[str, str] | None,
                    hooks: DialHooks | None, variables: dict[str, str] | None) -> DialOutcome:
        """Ring ``target``; on answer bridge it with this call until either side hangs up.
        ``variables``: channel variables set on the new leg (e.g. what its endpoint's geolocation reads).

        The caller hears ringing meanwhile (180 Ringing if not yet answered, else a ring tone).
        Raises CallHungUp if the caller hangs up (the leg is hung up too).
        """
        self._check_up()
        ops: DialOps = self._ops  # type: ignore[assignment]
        leg = OutboundLeg(ChannelId(str(uuid.uuid4())), target, Lifecycle(dt.datetime.now(dt.UTC)), caller_id)
        self.legs.append(leg)
        if self._register_leg is not None:
            self._register_leg(leg.channel_id, True)
        if self._on_dial is not None:
            self._on_dial(leg.channel_id)
        ringtone: str | None = None
        bridge_id: str | None = None
        try:
            variables = {**(variables or {}),
                         **{f"PJSIP_HEADER(add,{name})": value for name, value in (headers or {}).items()}}
            if max_talk_s:
                variables["TIMEOUT(absolute)"] = str(int(max_talk_s + timeout_s))
            try:
                # The limit is set at creation (ringing counts: never more than paid for) and again
                # at answer, inside Asterisk: it holds even if the engine dies meanwhile.
                await ops.originate(leg.channel_id, target, timeout_s=timeout_s, caller_id=caller_id,
                                    variables=variables or None)
            except AriError as exc:
                leg.lifecycle.ended(dt.datetime.now(dt.UTC), 38, f"originate failed: {exc.message}")
                return DialOutcome("failed", 38)
            if self.lifecycle.answered_at is None:
                await ops.ring(self.channel.id, True)
            else:
                ringtone = str(uuid.uuid4())
                await ops.play(self.channel.id, ["tone:ring"], ringtone, self.language)
            # Ringing: until the leg answers (enters Stasis) or ends; a margin over Asterisk's timeout.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s + 5
            while leg.lifecycle.answered_at is None:
                event = await self._wait_leg_event(leg, deadline - loop.time())
                if event is None:
                    leg.lifecycle.ended(dt.datetime.now(dt.UTC), 19, "no answer (engine timeout)")
                    with contextlib.suppress(AriError):
                        await ops.hang_up(leg.channel_id, "no_answer")
                    return DialOutcome("noanswer", 19)
                if isinstance(event, StasisStart):
                    leg.lifecycle.answered(event.at)
                elif isinstance(event, ChannelDestroyed):
                    return DialOutcome(dial_status(leg.lifecycle.hangup_cause), leg.lifecycle.hangup_cause)
            # The limit counts from the answer, so it is set now, before anything plays on either channel:
            # Asterisk carries out a channel command only once the channel is free, so set after the
            # recording notice (``on_bridged``) or any prompt it would start that much late and the call
            # would outlive its credit by the notice's length (issue: set_var waits for a playback's end).
            counted_from = asyncio.get_running_loop().time()
            if max_talk_s:
                await ops.set_var(leg.channel_id, "TIMEOUT(absolute)", str(int(max_talk_s)))
            if ringtone is not None:
                await ops.stop_playback(ringtone)
                ringtone = None
            await self.answer()
            if max_talk_s:
                # The caller's own channel too (a little later), so neither side outlives the credit.
                await ops.set_var(self.channel.id, "TIMEOUT(absolute)", str(int(max_talk_s) + 2))
            bridge_id = f"{CALL_BRIDGE_PREFIX}{leg.channel_id}"
            await ops.create_bridge(bridge_id, f"call {self.call_id}")
            await ops.add_to_bridge(bridge_id, self.channel.id)
            await ops.add_to_bridge(bridge_id, leg.channel_id)
            if hooks is not None and hooks.on_bridged is not None:
                await hooks.on_bridged(bridge_id, self.channel.id, leg.channel_id)
            return await self._talk(leg, max_talk_s or None, hooks, counted_from)
        finally:
            if ringtone is not None:
                with contextlib.suppress(AriError):
                    await ops.stop_playback(ringtone)
            await self._let_go(leg, bridge_id)

    async def resume_bridged(self, target: str, *, caller_id: str | None = None,
                             hooks: DialHooks | None = None) -> DialOutcome:
        with self._channels_of_this_call():
            return await self._resume_bridged(target, caller_id=caller_id, hooks=hooks)

    async def _resume_bridged(self, target: str, *, caller_id: str | None, hooks: DialHooks | None) -> DialOutcome:
        """Keep up the two-party call a previous engine bridged (``self.resumed``, set at adoption after a
        restart) and end it as ``dial`` would: the far end hanging up ends the call, the caller hanging up
        (CallHungUp) ends the leg. The limits the previous engine set stay in Asterisk (TIMEOUT(absolute)
        on both channels); the caller still hears the warning before the end, from what is left of it.
        ``hooks.on_resumed`` lets a feature take back its part (the recording and its objection key).
        ``target`` names the leg in its CDR, as ``dial`` would have."""
        assert self.resumed is not None
        ops: DialOps = self._ops  # type: ignore[assignment]
        leg_channel, bridge_id = self.resumed
        self._check_up()
        leg = OutboundLeg(leg_channel.id, target, Lifecycle(started_at=leg_channel.created_at), caller_id)
        # Answered when the caller was (the engine answers the caller as the leg answers), else unknown:
        # from when this engine found it.
        leg.lifecycle.answered(self.lifecycle.answered_at or dt.datetime.now(dt.UTC))
        self.legs.append(leg)
        if self._register_leg is not None:
            self._register_leg(leg.channel_id, True)
        try:
            try:  # its events reach this call from now on: did it end before?
                await ops.get_channel(leg.channel_id)
                # What is left of the limit the previous engine set on the leg (Asterisk counts it down).
                left_s = _seconds(await ops.get_var(leg.channel_id, "TIMEOUT(absolute)"))
            except ChannelGone:
                leg.lifecycle.ended(dt.datetime.now(dt.UTC), 16, "hung up before the engine resumed the call")
                left_s = None
            if hooks is not None and hooks.on_resumed is not None and leg.lifecycle.ended_at is None:
                await hooks.on_resumed(bridge_id, self.channel.id, leg.channel_id)
            return await self._talk(leg, left_s, hooks, asyncio.get_running_loop().time())
        finally:
            await self._let_go(leg, bridge_id)

    async def _talk(self, leg: OutboundLeg, left_s: float | None, hooks: DialHooks | None,
                    counted_from: float) -> DialOutcome:
        """Bridged: until the far end hangs up (the caller hanging up raises CallHungUp). ``left_s``: the
        paid time left at ``counted_from`` (loop time); the caller hears a beep LIMIT_WARNING_S before
        Asterisk cuts the call."""
        ops: DialOps = self._ops  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        warn_at = counted_from + max(0.0, left_s - LIMIT_WARNING_S) if left_s else None
        while leg.lifecycle.ended_at is None:
            wait_s = 24 * 3600.0 if warn_at is None else max(0.0, warn_at - loop.time())
            event = await self._wait_leg_event(leg, wait_s, hooks.on_digit if hooks else None)
            if event is None and warn_at is not None:
                warn_at = None  # once: a beep to the caller shortly before the limit
                log.info("call_limit_warning", warning_s=LIMIT_WARNING_S)
                with contextlib.suppress(AriError):
                    await ops.play(self.channel.id, ["sound:beep"], str(uuid.uuid4()), self.language)
        assert leg.lifecycle.answered_at is not None and leg.lifecycle.ended_at is not None
        talk_s = (leg.lifecycle.ended_at - leg.lifecycle.answered_at).total_seconds()
        return DialOutcome("answered", leg.lifecycle.hangup_cause, talk_s)

    async def _let_go(self, leg: OutboundLeg, bridge_id: str | None) -> None:
        """The end of a dialled leg's part in this call: hung up if the caller left first, their bridge
        destroyed, its events no longer routed here."""
        ops: DialOps = self._ops  # type: ignore[assignment]
        if leg.lifecycle.ended_at is None:  # the caller left first: the far end goes too
            leg.lifecycle.hangup_requested("caller")
            with contextlib.suppress(AriError):
                await ops.hang_up(leg.channel_id, "normal")
            leg.lifecycle.ended(dt.datetime.now(dt.UTC), 16, "caller hung up")
        if bridge_id is not None:
            with contextlib.suppress(AriError):
                await ops.destroy_bridge(bridge_id)
        if self._register_leg is not None:
            self._register_leg(leg.channel_id, False)

    async def _wait_leg_event(self, leg: OutboundLeg, timeout_s: float,
                              on_digit: Callable[[str, str], Awaitable[None]] | None = None) -> Event | None:
        """Next event of ``leg`` (applied to its lifecycle) within ``timeout_s``; the caller's own
        events are absorbed on the way (hang-up raises CallHungUp). ``on_digit`` sees DTMF of both."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            event = await self._next_event(max(0.0, deadline - loop.time()))
            if event is None:
                return None
            if on_digit is not None and isinstance(event, DtmfReceived):
                if event.channel_id == self.channel.id and self._digits:
                    self._digits.pop()  # consumed here, not type-ahead for a later step
                await on_digit(event.channel_id, event.digit)
            if getattr(event, "channel_id", None) == leg.channel_id or (
                    isinstance(event, StasisStart) and event.channel.id == leg.channel_id):
                lc = leg.lifecycle
                if isinstance(event, HangupRequest):
                    lc.hangup_requested("callee", event.cause)
                elif isinstance(event, ChannelDestroyed):
                    lc.ended(event.at, event.cause, event.cause_txt)
                elif isinstance(event, StasisEnd) and lc.answered_at is not None:
                    lc.ended(event.at, None, "far end hung up")
                return event

    async def limit_talk(self, seconds: int) -> None:
        """Asterisk hangs this call up ``seconds`` from now, even if the engine dies (TIMEOUT(absolute))."""
        self._check_up()
        with self._channels_of_this_call():
            await self._ops.set_var(self.channel.id, "TIMEOUT(absolute)", str(int(seconds)))

    async def hang_up(self, cause: str = "normal") -> None:
        if self._gone:
            return
        self.lifecycle.hangup_requested("engine", HANGUP_CAUSES.get(cause))
        self._gone = True
        try:
            await self._ops.hang_up(self.channel.id, cause)
        except ChannelGone:
            pass
