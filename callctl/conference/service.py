"""Dial-in conference service: admits callers by personal code and hands them to their room.

Admission, in order: brute-force lockout (failures per caller number and per access number over
a sliding window, kept in PostgreSQL so they count across calls and restarts), up to ``attempts``
code entries ending with ``#``, the code's admission window, then the room's own rules (lock,
capacity, one live leg per code). Every refusal is recorded with its reason. Prompts never say
whether a code exists: a wrong code and a revoked code sound the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callctl.calls.port import CallPort
from callctl.conference import minutes
from callctl.conference.affinity import RoomLeases
from callctl.conference.changes import ChangeFeed
from callctl.conference.hop import ChannelVars, NodeHops, Play, Recorder
from callctl.conference.offline import OfflineCodes
from callctl.conference.room import (
    BRIDGE_PREFIX,
    ORGANIZER,
    Action,
    JoinTimes,
    Member,
    Room,
    RoomOps,
    RoomSettings,
    RoomView,
)
from callctl.conference.timeline import TimelineWriter
from callctl.errors import AriError, CallHungUp, StoreError
from callctl.logging import Throttle, get_logger
from callctl.numbers import to_e164
from callctl.store import conferences as store
from callctl.store import minutes as minutes_store

log = get_logger("callctl.conference")

SLOW_JOIN_S = 0.02  # from the code's last key to the bridge: past this, conference_join_slow says where it went
_slow_joins = Throttle()


class FailureCounts(Protocol):
    """The lockout's failures of the window, by caller and by access number (callctl.store.lockout)."""

    async def recent_failures(self, db: Any, caller: str, access_number: str) -> tuple[int, int]: ...


class BridgeOps(Protocol):
    async def bridge_ids(self) -> list[str]: ...
    async def bridge_channel_count(self, bridge_id: str) -> int | None: ...
    async def destroy_bridge(self, bridge_id: str) -> None: ...


@dataclass(frozen=True)
class EntryPrompts:
    """Media per situation; defaults are stock Asterisk prompts, the dialplan may name its own."""

    ask: tuple[str, ...] = ("sound:conf-getpin",)
    invalid: tuple[str, ...] = ("sound:conf-invalidpin",)
    too_early: tuple[str, ...] = ("sound:conf-nonextended",)
    over: tuple[str, ...] = ("sound:conf-noempty",)
    locked: tuple[str, ...] = ("sound:conf-locked",)
    full: tuple[str, ...] = ("sound:conf-full",)
    in_use: tuple[str, ...] = ("sound:conf-invalidpin",)
    locked_out: tuple[str, ...] = ("sound:tt-allbusy",)
    unavailable: tuple[str, ...] = ("sound:tt-somethingwrong",)
    waiting: tuple[str, ...] = ("sound:conf-waitforleader",)
    goodbye: tuple[str, ...] = ("sound:vm-goodbye",)


@dataclass(frozen=True)
class EntryOptions:
    attempts: int = 3
    max_digits: int = 16
    first_digit_timeout_s: float = 10.0
    digit_timeout_s: float = 5.0
    prompts: EntryPrompts = field(default_factory=EntryPrompts)


@dataclass(frozen=True)
class LockoutPolicy:
    caller_failures: int = 5
    number_failures: int = 50
    window_s: float = 600.0


class ConferenceService(NodeHops):
    _hop_prompts = EntryPrompts()
    offline: OfflineCodes | None = None  # set by the wiring (issue 18): codes while PostgreSQL is unreachable
    failures: FailureCounts | None = None  # set by the wiring (issue 17): the lockout check from memory

    def __init__(self, pool: Any, ops: RoomOps, *, lockout: LockoutPolicy | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 meter_ops: minutes.MeterOps | None = None,
                 recorder: Recorder | None = None, leases: RoomLeases | None = None,
                 channel_vars: ChannelVars | None = None) -> None:
        self._pool = pool
        # Several nodes (issue 18): the rooms' leases, and how a hopped leg's identity is read.
        self._leases = leases
        self._channel_vars = channel_vars
        self._recorder = recorder
        self._ops = ops
        self._meter_ops = meter_ops  # organizer-paid legs (issue 10); without it such legs are refused
        self._lockout = lockout or LockoutPolicy()
        self._clock = clock
        self._rooms: dict[uuid.UUID, tuple[Room, asyncio.Task[None]]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._timeline = TimelineWriter(lambda rows: store.record_events(pool, rows))
        self.changes = ChangeFeed()  # the Online Space's live pages follow the rooms through it
        # Told of every change of a room held here, and of its end (issue 18: published for other nodes).
        self.room_watch: Callable[[str], None] | None = None

    # -- timeline (the rooms' sink) ------------------------------------------------------------

    def record(self, conference_id: str, person: str, role: str, what: str, at: dt.datetime,
               reason: str | None, leg_id: str) -> None:
        self._timeline.record(conference_id, person, role, what, at, reason, leg_id)

    def _spawn(self, coro: Any, failure_event: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except (StoreError, OSError) as exc:
                log.error(failure_event, error=str(exc))
            except Exception as exc:  # a store bug must not surface in a room
                log.error(failure_event, error=repr(exc))

        task = asyncio.create_task(guarded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        for _room, task in list(self._rooms.values()):
            task.cancel()
        if self._rooms:
            await asyncio.wait([t for _r, t in self._rooms.values()], timeout=5)
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)
        await self._timeline.close()

    # -- admission -----------------------------------------------------------------------------

    async def _locked_out(self, caller: str, access_number: str) -> bool:
        try:
            if self.failures is not None:
                by_caller, by_number = await self.failures.recent_failures(self._pool, caller, access_number)
            else:
                by_caller, by_number = await store.recent_failures(self._pool, caller, access_number,
                                                                   self._lockout.window_s)
        except StoreError:
            if self.offline is None or not self.offline.ready:
                raise
            by_caller, by_number = self.offline.failures(caller, access_number, self._lockout.window_s)
        return self._over_limit(by_caller, by_number)

    async def _find_code(self, code: str, access_number: str, caller: str) -> tuple[store.CodeMatch | None, int, int]:
        """store.find_code; while PostgreSQL is unreachable, the codes kept in memory (issue 18)."""
        try:
            return await store.find_code(self._pool, code, access_number, caller, self._lockout.window_s)
        except StoreError as exc:
            if self.offline is None or not self.offline.ready:
                raise
            log.warning("conference_code_from_memory", error=exc.message)
            match = self.offline.find(code, access_number)
            if match is None:
                return None, *self.offline.wrong_code(caller, access_number, self._lockout.window_s)
            return match, *self.offline.failures(caller, access_number, self._lockout.window_s)

    async def _record_attempt(self, caller: str, access_number: str, reason: str,
                              conference_id: uuid.UUID | None = None) -> None:
        try:
            await store.record_attempt(self._pool, caller, access_number, reason, conference_id)
        except StoreError:
            if self.offline is None or not self.offline.ready:
                raise
            self.offline.attempt(caller, access_number, reason, conference_id)  # written when it is back

    def _over_limit(self, by_caller: int, by_number: int) -> bool:
        return by_caller >= self._lockout.caller_failures or by_number >= self._lockout.number_failures

    async def _collect_code(self, call: CallPort, play: Play, prompts: tuple[str, ...],
                            opts: EntryOptions) -> str | None:
        digits = ""
        first = await play(list(prompts))
        timeout = opts.digit_timeout_s if first else opts.first_digit_timeout_s
        while len(digits) < opts.max_digits:
            digit = await call.read_digit(timeout)
            if digit is None or digit == "#":
                break
            if digit.isdigit():
                digits += digit
            timeout = opts.digit_timeout_s
        call.clear_digits()
        return digits or None

    async def enter(self, call: CallPort, access_number: str, opts: EntryOptions,
                    paid: minutes.PaidLine | None = None, *, prompts: Play | None = None) -> str:
        """Run the whole conference part of a call; returns its outcome for the CDR and logs.

        ``paid``: the access number is organizer-paid; the leg draws that pool while in the room.
        ``prompts``: how prompts are said (default: the call's own ``play``, media only).
        """
        play: Play = prompts or call.play
        p = opts.prompts
        caller = to_e164(call.caller, call.country) or "anonymous"
        try:
            if await self._locked_out(caller, access_number):
                await self._record_attempt(caller, access_number, "locked_out")
                log.warning("conference_caller_locked_out", access_number=access_number)
                await play(list(p.locked_out), interruptible=False)
                return "locked_out"
            for attempt in range(opts.attempts):
                code = await self._collect_code(call, play, p.ask, opts)
                if code is None:
                    continue
                keyed_at = time.monotonic()
                # One round trip: the lookup, and on a miss the attempt recorded and the lockout figures.
                match, by_caller, by_number = await self._find_code(code, access_number, caller)
                if match is None:
                    log.info("conference_code_rejected", attempt=attempt + 1, reason="wrong_code", digits=len(code))
                    if self._over_limit(by_caller, by_number):
                        await play(list(p.locked_out), interruptible=False)
                        return "locked_out"
                    await play(list(p.invalid), interruptible=False)
                    continue
                admission = match.conference.admission(self._clock())
                if admission != "open":
                    await self._record_attempt(caller, access_number, admission, match.conference.id)
                    log.info("conference_code_rejected", reason=admission, conference_id=str(match.conference.id))
                    await play(list(p.too_early if admission == "too_early" else p.over), interruptible=False)
                    return admission
                return await self._join(call, play, match, opts, caller, access_number, paid,
                                        keyed=(keyed_at, time.monotonic()))
        except StoreError as exc:
            log.error("conference_store_unavailable", error=str(exc))
            await play(list(p.unavailable), interruptible=False)
            return "store_unavailable"
        await play(list(p.goodbye), interruptible=False)
        return "no_valid_code"

    def _room_for(self, conf: store.Conference) -> Room:
        held = self._rooms.get(conf.id)
        if held is not None and not held[0].ended:
            return held[0]
        settings = RoomSettings(str(conf.id), conf.subject, language=conf.language, max_members=conf.max_members,
                                organizer_leave_policy=conf.organizer_leave_policy,
                                organizer_leave_grace_s=float(conf.organizer_leave_grace_s),
                                already_led=conf.started_at is not None)
        room = Room(settings, self._ops, self, recorder=self._recorder, on_end=self._on_room_end,
                    on_change=self._room_changed)
        # A fresh context: the room outlives the call that opened it and must not log its call_id.
        task = asyncio.create_task(room.run(), name=f"conference-{conf.id}", context=contextvars.Context())
        self._rooms[conf.id] = (room, task)
        task.add_done_callback(self._forget)
        return room

    async def set_recording(self, conference_id: uuid.UUID, on: bool) -> str:
        """Start or stop the recording of a live room (a request from the command line)."""
        held = self._rooms.get(conference_id)
        if held is None or held[0].ended:
            return "no_live_room"
        return await held[0].set_recording(on)

    def view(self, conference_id: uuid.UUID) -> RoomView | None:
        """The live room of a conference as the Online Space shows it (None: nobody in the call)."""
        held = self._rooms.get(conference_id)
        if held is None or held[0].ended:
            return None
        return held[0].view()

    async def act(self, conference_id: uuid.UUID, action: Action) -> str:
        """An Online Space action on the live room, applied by the room's own task (same effects and
        timeline rows as the DTMF menu); 'no_live_room' when nobody is in the call."""
        held = self._rooms.get(conference_id)
        if held is None or held[0].ended:
            return "no_live_room"
        return await held[0].act(action)

    async def clear_old_bridges(self, ops: BridgeOps, *, poll_s: float = 2.0, give_up_s: float = 3600.0) -> None:
        """After connecting to Asterisk: destroy the conference bridges no room of this engine owns (a
        previous engine's rooms) once they are empty. Their members, adopted by this engine, key their
        code again and join a new room, or hang up; Asterisk would keep the emptied bridge until it
        restarts. Polls only those bridges, and only until they are gone."""
        loop = asyncio.get_running_loop()
        own = {room.bridge_id for room, _task in self._rooms.values()}
        try:
            old = [b for b in await ops.bridge_ids() if b.startswith(BRIDGE_PREFIX) and b not in own]
        except AriError as exc:
            log.warning("conference_bridge_sweep_failed", error=exc.message)
            return
        deadline = loop.time() + give_up_s
        while old and loop.time() < deadline:
            for bridge_id in list(old):
                try:
                    members = await ops.bridge_channel_count(bridge_id)
                    if members == 0:
                        await ops.destroy_bridge(bridge_id)
                        log.info("conference_old_bridge_destroyed", bridge=bridge_id)
                except AriError as exc:  # Asterisk gone: the next connection sweeps again
                    log.warning("conference_bridge_sweep_failed", error=exc.message)
                    return
                if not members:
                    old.remove(bridge_id)
            if old:
                await asyncio.sleep(poll_s)
        if old:
            log.warning("conference_old_bridges_left", bridges=len(old))

    def _room_changed(self, conference_id: str) -> None:
        self.changes.notify(conference_id)
        if self.room_watch is not None:
            self.room_watch(conference_id)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for conference_id, (_room, held) in list(self._rooms.items()):
            if held is task:
                del self._rooms[conference_id]
                if self.room_watch is not None:
                    self.room_watch(str(conference_id))
                if self._leases is not None:
                    self._spawn(self._leases.release(conference_id), "conference_lease_release_failed")

    def held_rooms(self) -> list[uuid.UUID]:
        """The conferences whose room this engine holds open (their leases are renewed)."""
        return [conference_id for conference_id, (room, _task) in self._rooms.items() if not room.ended]

    def _on_room_end(self, conference_id: str, reason: str) -> None:
        if reason == "ended_by_organizer":
            self._spawn(store.mark_ended(self._pool, uuid.UUID(conference_id)), "conference_end_write_failed")

    async def _join(self, call: CallPort, play: Play, match: store.CodeMatch, opts: EntryOptions, caller: str,
                    access_number: str, paid: minutes.PaidLine | None = None,
                    keyed: tuple[float, float] | None = None) -> str:
        """``keyed``: when the code's last key was read and when its lookup answered (time.monotonic())."""
        p = opts.prompts
        conf = match.conference
        member = Member(call.channel_id, match.email, match.role, str(call.call_id), call.language)
        hold = None
        if paid is not None and self._meter_ops is None:
            return await self._refuse_unpaid(play, paid, conf, caller, access_number)
        if paid is not None:
            hold = await minutes.open_leg(self._pool, paid, conference_id=conf.id, leg_id=uuid.UUID(str(call.call_id)),
                                          access_number=access_number, person=match.email)
            if hold is None:
                return await self._refuse_unpaid(play, paid, conf, caller, access_number)
        owner = await self._owner_of(conf)
        if owner is not None:
            outcome = await self._hop(call, match, owner, caller, hold, paid)
            if outcome != "room_unreachable":
                return outcome
            if paid is not None or not await self._wait_for_takeover(call, conf):
                await play(list(p.unavailable), interruptible=False)
                return outcome
            call.result.extra.pop("room_node", None)  # the room is here after all
        room = self._room_for(conf)
        if room.recording and self._recorder is not None:  # told before a frame of theirs is recorded
            await self._recorder.tell_before_join(room, member, lambda media: play(media, interruptible=False))
        meter = None
        if paid is not None and hold is not None and self._meter_ops is not None:
            meter = minutes.LegMeter(self._pool, self._meter_ops, paid, hold, channel_id=call.channel_id,
                                     language=call.language, local_number=paid.local_for(conf.access_numbers),
                                     on_exhausted=lambda: self._take_out(room, member, "minutes_exhausted"))
            # Asterisk's limit before the leg is in the room: an engine dying right after the join leaves
            # no organizer-paid caller in it without a cut-off.
            await meter.limit_in_asterisk()
        entered = asyncio.get_running_loop().time()  # the pool is drawn from here, as the timeline says
        times = member.times = JoinTimes()
        result = await room.join(member)
        if result == "ended":  # the room closed between lookup and join: open a new one
            room = self._room_for(conf)
            entered = asyncio.get_running_loop().time()
            result = await room.join(member)
        if result not in ("joined", "waiting"):
            if hold is not None:
                await minutes_store.settle(self._pool, hold.id, 0)
            await self._record_attempt(caller, access_number, result, conf.id)
            log.info("conference_join_refused", reason=result, conference_id=str(conf.id))
            await play(list({"locked": p.locked, "full": p.full, "in_use": p.in_use}.get(result, p.over)),
                            interruptible=False)
            return result
        call.result.conference_id, call.result.person, call.result.role = str(conf.id), match.email, match.role
        if keyed is not None and times.bridged and times.bridged - keyed[0] > SLOW_JOIN_S:
            _log_slow_join(keyed, times)
        if match.role == ORGANIZER and conf.started_at is None:  # led before: nothing to write
            self._spawn(store.mark_started(self._pool, conf.id), "conference_start_write_failed")
        try:
            if meter is not None:
                await meter.start(since=entered)
            await self._in_room(call, play, room, member)
        except CallHungUp:
            room.leave(member, "hangup")
            raise
        finally:
            if meter is not None:
                await meter.close()
        if meter is not None and meter.moved:
            await minutes.wait_for_moved_leg_end(call)
        room.leave(member, "ended")
        return "conference_left"

    @staticmethod
    async def _take_out(room: Room, member: Member, reason: str) -> None:
        """Take a member out of the room and return once the room has done it: the room applies requests
        in order, so an (empty) command queued after the leave is answered only after it."""
        room.leave(member, reason)
        if not room.ended:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # a room that closes meanwhile answers nothing more
                    await room.command(member, "")

    async def _refuse_unpaid(self, play: Play, paid: minutes.PaidLine, conf: store.Conference, caller: str,
                             access_number: str) -> str:
        """The pool cannot cover a new leg: say the free line is not available and give the local number."""
        local = paid.local_for(conf.access_numbers)
        await store.record_attempt(self._pool, caller, access_number, "minutes_unavailable", conf.id)
        log.info("conference_join_refused", reason="minutes_unavailable", conference_id=str(conf.id),
                 local_number_given=local is not None)
        await play(paid.with_number(paid.unavailable, local), interruptible=False)
        return "minutes_unavailable"

    async def _in_room(self, call: CallPort, play: Play, room: Room, member: Member) -> None:
        """Read DTMF commands (``*`` then a key) until the caller hangs up or the room ends."""
        call.clear_digits()
        while not room.ended:
            digit = await call.read_digit(5.0)
            if digit != "*":
                continue
            key = await call.read_digit(3.0)
            if key is None:
                continue
            prompts = await room.command(member, "*" + key)
            if prompts and not room.ended:
                with contextlib.suppress(CallHungUp):
                    await play(prompts, interruptible=False)


def _log_slow_join(keyed: tuple[float, float], times: JoinTimes) -> None:
    """Where a slow join's time went, from the code's last key read to the bridge request answered:
    the code's lookup, what came before the room (lease, recording notice, meter), the wait in the room's
    queue (``room_before``: what the room did meanwhile), the addChannel request."""
    if not _slow_joins.allow():
        return
    keyed_at, found_at = keyed

    def ms(a: float, b: float) -> float:
        return round((b - a) * 1000, 1)

    log.warning("conference_join_slow", unlogged=_slow_joins.unlogged(), ms=ms(keyed_at, times.bridged),
                lookup_ms=ms(keyed_at, found_at),
                admit_ms=ms(found_at, times.queued), queue_ms=ms(times.queued, times.taken),
                room_before=times.before or None, bridge_ms=ms(times.taken, times.bridged))
