"""Organizer-paid legs (issue 10): a leg's hold on the organizer's free-minutes pool, drawn per second
while the leg is in the conference, extended slice by slice, then warned and ended (or moved out of
the room to the local-number message) when the pool cannot cover more. See docs/minutes.md.

Asterisk enforces each hold itself (``TIMEOUT(absolute)`` on the channel, a grace after the hold
ends), so a leg cannot outrun the pool even if the engine dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from callctl.errors import AriError, StoreError
from callctl.freeminutes import ASTERISK_GRACE_S, MOVE_ANNOUNCE_S, MeterTerms, spoken_number, used_seconds
from callctl.logging import get_logger
from callctl.store import minutes as store

log = get_logger("callctl.minutes")


class MeterOps(Protocol):
    async def set_var(self, channel_id: str, name: str, value: str) -> None: ...
    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None: ...
    async def hang_up(self, channel_id: str, reason: str = "normal") -> None: ...
    async def stop_playback(self, playback_id: str) -> None: ...


@dataclass(frozen=True)
class PaidLine:
    """An organizer-paid access number as the conference service needs it (built by the flow step)."""

    account_id: uuid.UUID
    terms: MeterTerms
    local_number: str | None  # from the dialplan; None: the conference's own local access number
    paid_numbers: frozenset[str]  # every organizer-paid number of the dialplan: never offered as local
    unavailable: tuple[str, ...]  # prompt names or media, played by the call (refusal before the room)
    warning: tuple[str, ...]  # media, played to the channel by the meter
    exhausted: tuple[str, ...]  # media ("move")

    def local_for(self, access_numbers: Sequence[str]) -> str | None:
        if self.local_number is not None:
            return self.local_number
        return next((n for n in access_numbers if n not in self.paid_numbers), None)

    def with_number(self, media: Sequence[str], local: str | None) -> list[str]:
        return [*media, f"digits:{spoken_number(local)}"] if local else list(media)


class LegMeter:
    """One leg's hold on a pool: started when the leg enters the conference, closed (settled with the
    seconds used) when it leaves. ``on_exhausted`` takes the leg out of the room (returns once it is out)."""

    def __init__(self, pool: Any, ops: MeterOps, line: PaidLine, hold: store.Hold, *, channel_id: str,
                 language: str, local_number: str | None,
                 on_exhausted: Callable[[], Awaitable[None]]) -> None:
        self._pool = pool
        self._ops = ops
        self._line = line
        self._terms = line.terms
        self.hold_id = hold.id
        self.held_s = hold.held_s
        self._channel_id = channel_id
        self._language = language
        self._local = local_number
        self._on_exhausted = on_exhausted
        self._started: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._warning_id: str | None = None
        self._limited = False  # Asterisk's limit for the first hold is set (limit_in_asterisk)
        self.exhausted = False

    @property
    def moved(self) -> bool:
        """The leg was taken out of the room to the local-number message ("move")."""
        return self.exhausted and self._terms.when_exhausted == "move"

    def elapsed_s(self) -> float:
        return 0.0 if self._started is None else asyncio.get_running_loop().time() - self._started

    async def start(self, since: float | None = None) -> None:
        """Start drawing; ``since`` (loop time) is when the leg entered the room: the room may answer a
        join only seconds later (it moves waiting channels into the bridge first), and the leg is in
        the room, and on the free line, all that time."""
        self._started = asyncio.get_running_loop().time() if since is None else since
        if not self._limited:
            await self._enforce_in_asterisk(self.held_s + ASTERISK_GRACE_S)
        self._task = asyncio.create_task(self._run(), name=f"minutes-{self.hold_id}")

    async def limit_in_asterisk(self) -> None:
        """Set Asterisk's cut-off for the first hold now, before the leg enters the room (``start`` then
        does not set it again): Asterisk enforces it even if the engine dies before the meter starts."""
        await self._enforce_in_asterisk(self.held_s + ASTERISK_GRACE_S)
        self._limited = True

    async def close(self) -> int:
        """Stop metering and settle the seconds used (idempotent in the store); returns them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        used = used_seconds(self.elapsed_s(), self.held_s)
        try:
            used = await store.settle(self._pool, self.hold_id, used)
        except StoreError as exc:
            # Left open: settled at its full hold by the next start's sweep (store.settle_expired).
            log.error("minutes_settle_failed", hold_id=str(self.hold_id), used_s=used, error=str(exc))
            return used
        log.info("minutes_leg_settled", hold_id=str(self.hold_id), used_s=used, held_s=self.held_s)
        return used

    async def _run(self) -> None:
        t = self._terms
        warned = False
        while True:
            left = self.held_s - self.elapsed_s()
            if left <= t.extend_when_left_s and await self._extend():
                warned = False
                continue
            if left <= 0:
                await self._exhaust()
                return
            if left <= t.warn_before_s and not warned:
                warned = True
                self._warning_id = await self._say(self._line.warning)
                log.info("minutes_leg_warned", hold_id=str(self.hold_id), left_s=round(left, 1))
            if left > t.extend_when_left_s:
                wait = left - t.extend_when_left_s
            elif left > t.warn_before_s and not warned:
                wait = min(1.0, left - t.warn_before_s)
            else:
                wait = min(1.0, left)  # retry the pool each second: a leaving leg or a purchase frees seconds
            await asyncio.sleep(max(0.01, wait))

    async def _extend(self) -> int:
        try:
            added = await store.extend(self._pool, self.hold_id, self._terms.hold_s)
        except StoreError as exc:
            # Never draw what is not held: with the store down the leg ends when its hold does.
            log.warning("minutes_extend_failed", hold_id=str(self.hold_id), error=str(exc))
            return 0
        if added:
            self.held_s += added
            left = self.held_s - self.elapsed_s()
            await self._enforce_in_asterisk(int(left) + 1 + ASTERISK_GRACE_S)
        return added

    async def _exhaust(self) -> None:
        self.exhausted = True
        log.info("minutes_leg_exhausted", hold_id=str(self.hold_id), policy=self._terms.when_exhausted,
                 held_s=self.held_s)
        if self._terms.when_exhausted == "move":
            if self._warning_id is not None:
                # A bridged channel runs ARI commands only between playbacks: end the warning first.
                with contextlib.suppress(AriError):
                    await self._ops.stop_playback(self._warning_id)
            await self._enforce_in_asterisk(MOVE_ANNOUNCE_S)  # Asterisk ends the call after the message
            await self._on_exhausted()
            await self._say(self._line.exhausted)
            return
        await self._on_exhausted()
        with contextlib.suppress(AriError):
            await self._ops.hang_up(self._channel_id, "normal")

    async def _say(self, media: Sequence[str]) -> str | None:
        playback_id = uuid.uuid4().hex
        try:
            await self._ops.play(self._channel_id, self._line.with_number(media, self._local), playback_id,
                                 self._language)
        except AriError:
            return None
        return playback_id

    async def _enforce_in_asterisk(self, seconds: int) -> None:
        try:
            await self._ops.set_var(self._channel_id, "TIMEOUT(absolute)", str(max(1, int(seconds))))
        except AriError as exc:
            log.warning("minutes_asterisk_timeout_failed", hold_id=str(self.hold_id), error=exc.message)


async def open_leg(pool: Any, line: PaidLine, *, conference_id: uuid.UUID, leg_id: uuid.UUID, access_number: str,
                   person: str) -> store.Hold | None:
    """Hold the first slice for a new leg; None when the pool cannot cover ``min_leg_s``."""
    t = line.terms
    return await store.reserve(pool, line.account_id, max(t.hold_s, t.min_leg_s), t.min_leg_s,
                               conference_id=conference_id, leg_id=leg_id, access_number=access_number,
                               person=person)


class DigitReader(Protocol):
    async def read_digit(self, timeout_s: float) -> str | None: ...


async def wait_for_moved_leg_end(call: DigitReader) -> None:
    """A moved leg hears the local-number message out of the room until Asterisk ends the call (the
    meter set its TIMEOUT(absolute)): the conference step must not hang it up in the middle."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(MOVE_ANNOUNCE_S + ASTERISK_GRACE_S):
            while True:
                await call.read_digit(1.0)  # raises CallHungUp when Asterisk hangs up


ABANDONED_GRACE_S = 120


async def settle_abandoned_holds(pool: Any) -> None:
    """At start: settle holds a previous engine left open (it died with legs in a room). Asterisk cut
    those legs at most ASTERISK_GRACE_S after their hold ended, so they are settled at their full hold."""
    try:
        settled = await store.settle_expired(pool, ABANDONED_GRACE_S)
    except StoreError as exc:
        log.warning("minutes_sweep_failed", error=str(exc))
        return
    if settled:
        log.warning("minutes_abandoned_holds_settled", holds=settled)
