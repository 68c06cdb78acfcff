"""One call leg driven over ARI: the ``CallPort`` that flows use.

The call task is the only reader of its mailbox. DTMF is buffered (type-ahead), hang-up is
remembered and raised as ``CallHungUp`` at the next await, playback completion wakes ``play``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from collections.abc import Sequence
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
)
from callctl.calls.lifecycle import Lifecycle
from callctl.calls.port import DialOutcome
from callctl.errors import CallHungUp, ChannelGone
from callctl.ids import CallId

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


class Call:
    def __init__(self, ops: ChannelOps, channel: ChannelInfo, mailbox: Mailbox, *, language: str = "en") -> None:
        self.call_id = CallId(str(uuid.uuid4()))
        self.channel = channel
        self.caller = channel.caller_number
        self.called = channel.exten
        self.language = language
        self.country: str | None = None  # ISO alpha-2 of the number called, set from the route
        self.cdr_fields: dict[str, Any] = {}  # features tag the leg's CDR (conference_id, person, role...)
        self.lifecycle = Lifecycle(started_at=channel.created_at)
        if channel.answered_at is not None:  # adopted after a restart: answered by a previous engine
            self.lifecycle.answered(channel.answered_at)
        self._ops = ops
        self._mailbox = mailbox
        self._digits: collections.deque[str] = collections.deque()
        self._gone = False  # the channel has left Stasis or been hung up
        self.ended = asyncio.Event()

    @property
    def channel_id(self) -> str:
        return self.channel.id

    # -- event intake --------------------------------------------------------------------------

    def _absorb(self, event: Event) -> None:
        """Apply an event's facts; every wait goes through here."""
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
            # Kept in Asterisk so an engine restarted mid-call bills from the true answer time.
            await self._ops.set_var(self.channel.id, "CALLCTL_ANSWERED_AT", answered_at.isoformat())
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

    async def dial(self, target: str, *, timeout_s: float, caller_id: str | None = None) -> DialOutcome:
        # Bridged outbound legs arrive with the business-lines work (issue 5); until then a dial
        # step fails cleanly and the flow takes its failure branch.
        self._check_up()
        return DialOutcome(status="failed", cause=None)

    async def hang_up(self, cause: str = "normal") -> None:
        if self._gone:
            return
        self.lifecycle.hangup_requested("engine")
        self._gone = True
        try:
            await self._ops.hang_up(self.channel.id, cause)
        except ChannelGone:
            pass
