"""A conference room: one owning task per live conference, owner of its ARI mixing bridge.

Members' call tasks never touch the bridge: they send requests (join, leave, a DTMF command) to
the room's queue and the room applies them in order, so two people pressing keys at the same
instant can never race. The room may act on its members' channels (mute, music on hold, hang up)
because they are in its bridge.

Rules (BRIEF section 1, issue 4):
- the organizer leads: participants who arrive first hear music on hold and "waiting for the
  organizer"; they are joined when the organizer arrives;
- when the organizer leaves, the conference ends after ``organizer_leave_grace_s`` (policy "end")
  or goes on (policy "continue");
- a personal code holds one live leg: a second caller with a code already in the room is refused
  ("in_use"), so a leaked code cannot kick out its owner;
- a locked room refuses newcomers; a full room (``max_members``) too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from callctl.conference.actions import ACTIONS, ORGANIZER, ORGANIZER_ACTIONS, Action, MemberView, RoomView
from callctl.errors import AriError
from callctl.logging import get_logger

log = get_logger("callctl.conference")

BRIDGE_PREFIX = "conf-"  # every room's bridge id starts with it (a new random suffix per room)
PARTICIPANT = "participant"

# Stock Asterisk prompts (en and fr); resolved in the caller's language by Asterisk.
TONE_ENTER = "sound:beep"
TONE_LEAVE = "sound:beeperr"
ENTERING = "entering"  # _join's answer for a participant going into the bridge (answered when in)
TONES_DRAIN_S = 2.0  # a closing room's last tones: Asterisk answers in milliseconds, a lost one is no loss


class RoomOps(Protocol):
    async def create_bridge(self, bridge_id: str, name: str) -> None: ...
    async def destroy_bridge(self, bridge_id: str) -> None: ...
    async def add_to_bridge(self, bridge_id: str, channel_id: str) -> None: ...
    async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None: ...
    async def play_to_bridge(self, bridge_id: str, media: list[str], playback_id: str, language: str) -> None: ...
    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None: ...
    async def mute(self, channel_id: str, muted: bool) -> None: ...
    async def start_moh(self, channel_id: str) -> None: ...
    async def stop_moh(self, channel_id: str) -> None: ...
    async def hang_up(self, channel_id: str, reason: str = "normal") -> None: ...


class RoomRecorder(Protocol):
    """Recording of a room (callctl.recording.conference): the notice is heard before capture starts."""

    async def start(self, room: Room) -> bool: ...
    async def stop(self, room: Room) -> None: ...
    async def tell(self, room: Room, members: list[Member]) -> None: ...


class TimelineSink(Protocol):
    def record(self, conference_id: str, person: str, role: str, what: str, at: dt.datetime,
               reason: str | None, leg_id: str) -> None: ...


@dataclass(frozen=True)
class RoomSettings:
    conference_id: str
    subject: str
    language: str = "en"
    max_members: int = 50
    organizer_leave_policy: str = "end"  # end | continue
    organizer_leave_grace_s: float = 60.0
    already_led: bool = False  # the organizer opened an earlier room of this conference


@dataclass
class JoinTimes:
    """Where one join's time went (time.monotonic() marks), for ``conference_join_slow``: queued in the
    room, taken by the room, in the bridge; ``before``: what the room did between queued and taken."""

    queued: float = 0.0
    taken: float = 0.0
    bridged: float = 0.0
    before: str = ""


@dataclass
class Member:
    channel_id: str
    person: str
    role: str
    leg_id: str
    language: str = "en"
    muted: bool = False
    in_bridge: bool = False
    joined_at: dt.datetime | None = None
    heard_notice: bool = False  # heard that the conference is recorded (before entering the bridge)
    times: JoinTimes | None = None  # given by the caller of ``join``: filled with where the join's time went


@dataclass
class _Join:
    member: Member
    reply: asyncio.Future[str]


@dataclass
class _Leave:
    member: Member
    reason: str


@dataclass
class _Command:
    member: Member
    keys: str
    reply: asyncio.Future[list[str]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _Record:
    """Start or stop recording on request from outside the room (the command line)."""

    on: bool
    reply: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _Action:
    """A command from outside the call (the Online Space): typed, applied in order like a DTMF key."""

    action: Action
    reply: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


_Request = _Join | _Leave | _Command | _Record | _Action

__all__ = ["ACTIONS", "BRIDGE_PREFIX", "ORGANIZER", "ORGANIZER_ACTIONS", "PARTICIPANT", "Action", "JoinTimes", "Member",
           "MemberView", "Room", "RoomOps", "RoomRecorder", "RoomSettings", "RoomView", "TimelineSink"]


class Room:
    def __init__(self, settings: RoomSettings, ops: RoomOps, timeline: TimelineSink,
                 recorder: RoomRecorder | None = None,
                 on_end: Callable[[str, str], None] | None = None,
                 on_change: Callable[[str], None] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.settings = settings
        self.bridge_id = f"{BRIDGE_PREFIX}{settings.conference_id}-{uuid.uuid4().hex[:8]}"
        self._ops = ops
        self._timeline = timeline
        self._recorder = recorder
        self._on_end = on_end
        self._on_change = on_change
        self._clock = clock
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.members: dict[str, Member] = {}
        self.locked = False
        self.participants_muted = False
        self.recording = False
        self.ended = False
        self._organizer_gone_at: float | None = None
        self._was_used = False  # a room closes when its last member leaves, not before the first joins
        self._led_once = settings.already_led  # the organizer has been in the bridge at least once
        self._entry_tone_due = False  # members entered: one tone once the joins queued with them are in
        self._work: collections.deque[tuple[float, str]] = collections.deque(maxlen=8)  # (ended at, what)
        self._tones: asyncio.Queue[list[str] | None] = asyncio.Queue()  # entry and leave tones, in order (None: end)
        # Participants being put into the bridge (their addChannel in flight): joins queued together enter
        # side by side; any other request waits until they are in (``_settle``).
        self._entering: set[asyncio.Task[None]] = set()

    # -- member side (called from call tasks) --------------------------------------------------

    async def join(self, member: Member) -> str:
        """'joined', 'waiting' (for the organizer), 'locked', 'full', 'in_use' or 'ended'."""
        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if member.times is not None:
            member.times.queued = time.monotonic()
        self._queue.put_nowait(_Join(member, reply))
        return await reply

    def leave(self, member: Member, reason: str) -> None:
        self._queue.put_nowait(_Leave(member, reason))

    async def command(self, member: Member, keys: str) -> list[str]:
        """Apply a DTMF command (``*6``...); returns the prompts to play to the member."""
        cmd = _Command(member, keys)
        self._queue.put_nowait(cmd)
        return await cmd.reply

    async def set_recording(self, on: bool) -> str:
        """'started', 'stopped', 'already_recording', 'not_recording', 'failed', 'unavailable' or 'ended'."""
        if self.ended:  # nobody reads the queue any more
            return "ended"
        req = _Record(on)
        self._queue.put_nowait(req)
        return await req.reply

    async def act(self, action: Action) -> str:
        """Apply an Online Space action in the room's order; returns 'done' or why not
        ('forbidden', 'not_in_call', 'unknown_action', 'unavailable', 'failed', 'ended')."""
        if self.ended:
            return "ended"
        req = _Action(action)
        self._queue.put_nowait(req)
        return await req.reply

    def view(self) -> RoomView:
        return RoomView(tuple(MemberView(m.person, m.role, m.joined_at, m.muted, not m.in_bridge)
                              for m in sorted(self.members.values(),
                                              key=lambda m: (m.role != ORGANIZER, m.joined_at or dt.datetime.min))),
                        self.locked, self.participants_muted, self.recording)

    # -- the owner task ------------------------------------------------------------------------

    @property
    def present(self) -> list[Member]:
        return [m for m in self.members.values() if m.in_bridge]

    async def run(self) -> None:
        s = self.settings
        await self._ops.create_bridge(self.bridge_id, f"conference {s.conference_id}")
        log.info("conference_room_opened", conference_id=s.conference_id, bridge=self.bridge_id)
        loop = asyncio.get_running_loop()
        tones = asyncio.create_task(self._play_tones(), name=f"conference-tones-{s.conference_id}")
        try:
            while not self.ended:
                timeout = None
                if self._organizer_gone_at is not None:
                    timeout = max(0.0, self._organizer_gone_at + s.organizer_leave_grace_s - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        request = await self._queue.get()
                except TimeoutError:
                    log.info("conference_ended", conference_id=s.conference_id, reason="organizer_left")
                    await self._end("organizer_left")
                    break
                if not isinstance(request, _Join):
                    await self._settle()  # the joins before it are in the bridge (or failed) first
                if self._entry_tone_due and not isinstance(request, _Join):
                    self._entry_tone()  # before what follows the joins (a leave's tone, a command)
                try:
                    await self._apply(request)
                    self._work.append((time.monotonic(), type(request).__name__.strip("_").lower()))
                except AriError as exc:  # one member's channel vanishing must not end the room
                    log.warning("conference_request_failed", conference_id=s.conference_id, error=exc.message)
                    if isinstance(request, _Join) and not request.reply.done():
                        request.reply.set_result("ended")
                    if isinstance(request, _Command) and not request.reply.done():
                        request.reply.set_result([])
                    if isinstance(request, _Record | _Action) and not request.reply.done():
                        request.reply.set_result("failed")
                if self._entry_tone_due and self._queue.empty() and not self._entering:
                    self._entry_tone()
                self._changed()
                if not self.members and self._organizer_gone_at is None and self._was_used:
                    break
        finally:
            self.ended = True
            await self._settle()
            self._tones.put_nowait(None)  # the tones decided so far still go out, as before the room's end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tones), TONES_DRAIN_S)
            tones.cancel()
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if isinstance(pending, _Join) and not pending.reply.done():
                    pending.reply.set_result("ended")
                elif isinstance(pending, _Command) and not pending.reply.done():
                    pending.reply.set_result([])
                elif isinstance(pending, _Record | _Action) and not pending.reply.done():
                    pending.reply.set_result("ended")
            if self.recording and self._recorder is not None:
                self.recording = False
                with contextlib.suppress(AriError):
                    await self._recorder.stop(self)
            with contextlib.suppress(AriError):
                await self._ops.destroy_bridge(self.bridge_id)
            log.info("conference_room_closed", conference_id=s.conference_id)
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.settings.conference_id)

    async def _settle(self) -> None:
        """Wait until the participants being put into the bridge are in (or failed)."""
        while self._entering:
            await asyncio.wait(list(self._entering))

    def _enter_aside(self, request: _Join) -> None:
        """Put a participant into the bridge in a task of the room's, answering the join when done: a join
        queued behind it no longer waits for this one's addChannel (a round trip to Asterisk, up to a hundred
        milliseconds on a loaded machine, measured: joins queued together each waited for all before them)."""
        name = f"conference-enter-{request.member.channel_id}"
        self._entering.add(asyncio.create_task(self._enter_then_reply(request), name=name))

    async def _enter_then_reply(self, request: _Join) -> None:
        result = "joined"
        try:
            await self._enter_bridge(request.member)
        except AriError as exc:  # the member's channel vanished: the room goes on
            log.warning("conference_request_failed", conference_id=self.settings.conference_id, error=exc.message)
            result = "ended"
        finally:
            current = asyncio.current_task()
            if current is not None:
                self._entering.discard(current)
        if not request.reply.done():
            request.reply.set_result(result)
        if self._entry_tone_due and self._queue.empty() and not self._entering and not self.ended:
            self._entry_tone()
        self._changed()

    async def _apply(self, request: _Request) -> None:
        if isinstance(request, _Join):
            times = request.member.times
            if times is not None:
                times.taken = time.monotonic()
                times.before = "+".join(what for ended, what in self._work if ended > times.queued)
            result = await self._join(request.member)
            if result == ENTERING:
                self._enter_aside(request)
            elif not request.reply.done():
                request.reply.set_result(result)
        elif isinstance(request, _Leave):
            await self._leave(request.member, request.reason)
        elif isinstance(request, _Record):
            result = await self._set_recording(request.on)
            if not request.reply.done():
                request.reply.set_result(result)
        elif isinstance(request, _Action):
            result = await self._act(request.action)
            if not request.reply.done():
                request.reply.set_result(result)
        else:
            prompts = await self._command(request.member, request.keys)
            if not request.reply.done():
                request.reply.set_result(prompts)

    async def _join(self, m: Member) -> str:
        s = self.settings
        if self.ended:
            return "ended"
        if any(other.person == m.person for other in self.members.values()):
            return "in_use"
        if self.locked:
            return "locked"
        if len(self.members) >= s.max_members:
            return "full"
        self._was_used = True
        self.members[m.channel_id] = m
        self._record(m, "join", None)
        if m.role == ORGANIZER:
            self._organizer_gone_at = None
            await self._settle()  # the waiting members it takes in are all known and none half-entered
            await self._enter_bridge(m)
            for waiting in [w for w in self.members.values() if not w.in_bridge]:
                await self._ops.stop_moh(waiting.channel_id)
                await self._enter_bridge(waiting)
            return "joined"
        led = any(p.role == ORGANIZER for p in self.present)
        goes_on = s.organizer_leave_policy == "continue" and self._led_once
        if not led and not goes_on:
            # Queued on the channel: the music starts once the message has played.
            await self._ops.play(m.channel_id, ["sound:conf-waitforleader"], uuid.uuid4().hex, m.language)
            await self._ops.start_moh(m.channel_id)
            return "waiting"
        return ENTERING

    async def _enter_bridge(self, m: Member) -> None:
        if m.role == ORGANIZER:
            self._led_once = True
        if self.recording and not m.heard_notice and self._recorder is not None:
            # Normally heard before joining (ConferenceService); this covers a recording started
            # meanwhile, and the waiting participants taken in when the organizer arrives.
            await self._recorder.tell(self, [m])
        await self._ops.add_to_bridge(self.bridge_id, m.channel_id)
        if m.times is not None:
            m.times.bridged = time.monotonic()
        m.in_bridge = True
        if self.participants_muted and m.role == PARTICIPANT:
            await self._ops.mute(m.channel_id, True)
            m.muted = True
        if len(self.present) == 1:  # nobody to tell of the entry: the member hears that they are alone
            await self._ops.play(m.channel_id, ["sound:conf-onlyperson"], uuid.uuid4().hex, m.language)
        else:
            self._entry_tone_due = True

    def _entry_tone(self) -> None:
        """One entry tone for the members who entered since the last one: joins queued together (a burst
        at the start of a conference) sound one tone, one bridge request, instead of one each."""
        self._entry_tone_due = False
        if len(self.present) > 1 and not self.ended:
            self._tones.put_nowait([TONE_ENTER])

    async def _play_tones(self) -> None:
        """The room's entry and leave tones, in the order the room decided them, each once Asterisk took
        the one before. Their own task: a join queued behind a tone waited for Asterisk's answer to it
        (tens of milliseconds under load: measured in the join's time), now only for the room's decisions."""
        while (media := await self._tones.get()) is not None:
            try:
                await self._play_bridge(media)
            except AriError as exc:  # a tone lost is no member lost
                log.warning("conference_request_failed", conference_id=self.settings.conference_id,
                            error=exc.message)

    async def _leave(self, m: Member, reason: str) -> None:
        member = self.members.pop(m.channel_id, None)
        if member is None:
            return
        self._record(member, "leave", reason)
        if member.in_bridge:
            if reason != "hangup":  # a channel that hung up has already left the bridge
                await self._ops.remove_from_bridge(self.bridge_id, member.channel_id)
            if self.present:
                self._tones.put_nowait([TONE_LEAVE])
        if member.role == ORGANIZER and self.settings.organizer_leave_policy == "end" and self.members:
            self._organizer_gone_at = asyncio.get_running_loop().time()
            log.info("conference_organizer_left", conference_id=self.settings.conference_id,
                     grace_s=self.settings.organizer_leave_grace_s)
        if not self.members:
            self._organizer_gone_at = None

    async def _command(self, m: Member, keys: str) -> list[str]:
        if m.channel_id not in self.members:
            return []
        organizer = m.role == ORGANIZER
        if keys == "*6":
            m.muted = not m.muted
            await self._ops.mute(m.channel_id, m.muted)
            log.info("conference_member_muted", conference_id=self.settings.conference_id, muted=m.muted)
            return ["sound:conf-muted" if m.muted else "sound:conf-unmuted"]
        if keys == "*#":
            others = len(self.present) - (1 if m.in_bridge else 0)
            if others <= 0:
                return ["sound:conf-onlyperson"]
            return ["sound:conf-thereare", f"number:{others}", "sound:conf-otherinparty"]
        if keys == "*0":
            return ["sound:conf-adminmenu" if organizer else "sound:conf-usermenu"]
        if not organizer:
            return ["sound:conf-errormenu"]
        if keys == "*1":
            self.locked = not self.locked
            return ["sound:conf-lockednow" if self.locked else "sound:conf-unlockednow"]
        if keys == "*2":
            self.participants_muted = not self.participants_muted
            for p in self.present:
                if p.role == PARTICIPANT:
                    await self._ops.mute(p.channel_id, self.participants_muted)
                    p.muted = self.participants_muted
            return ["sound:conf-now-muted" if self.participants_muted else "sound:conf-now-unmuted"]
        if keys == "*3":
            result = await self._set_recording(not self.recording)
            if result == "unavailable":
                return ["sound:feature-not-avail-line"]
            if result == "failed":
                return ["sound:tt-somethingwrong"]
            return ["sound:conf-now-recording"] if self.recording else ["sound:beep"]
        if keys == "*9":
            await self._end("ended_by_organizer")
            return []
        return ["sound:conf-errormenu"]

    def _member_of(self, person: str | None) -> Member | None:
        return next((m for m in self.members.values() if m.person == person), None)

    async def _act(self, a: Action) -> str:
        """The Online Space's actions, with the same effects (and timeline rows) as the DTMF menu."""
        if a.kind not in ACTIONS:
            return "unknown_action"
        if a.kind in ORGANIZER_ACTIONS and a.role != ORGANIZER:
            return "forbidden"
        log.info("conference_space_action", conference_id=self.settings.conference_id, action=a.kind, role=a.role)
        if a.kind in ("mute", "unmute"):
            if a.role != ORGANIZER and a.target != a.by:  # a participant mutes only themselves
                return "forbidden"
            m = self._member_of(a.target)
            if m is None:
                return "not_in_call"
            m.muted = a.kind == "mute"
            await self._ops.mute(m.channel_id, m.muted)
            log.info("conference_member_muted", conference_id=self.settings.conference_id, muted=m.muted)
            return "done"
        if a.kind in ("lock", "unlock"):
            self.locked = a.kind == "lock"
            return "done"
        if a.kind in ("mute_all", "unmute_all"):
            self.participants_muted = a.kind == "mute_all"
            for p in self.present:
                if p.role == PARTICIPANT:
                    await self._ops.mute(p.channel_id, self.participants_muted)
                    p.muted = self.participants_muted
            return "done"
        if a.kind in ("record", "stop_recording"):
            result = await self._set_recording(a.kind == "record")
            return "done" if result in ("started", "stopped", "already_recording", "not_recording") else result
        if a.kind == "remove":
            m = self._member_of(a.target)
            if m is None:
                return "not_in_call"
            await self._leave(m, "removed_by_organizer")
            with contextlib.suppress(AriError):
                await self._ops.hang_up(m.channel_id, "normal")
            return "done"
        await self._end("ended_by_organizer")  # "end"
        return "done"

    async def _set_recording(self, on: bool) -> str:
        if self._recorder is None:
            return "unavailable"
        if self.ended:
            return "ended"
        if on == self.recording:
            return "already_recording" if on else "not_recording"
        if on:
            if not await self._recorder.start(self):
                return "failed"
            self.recording = True
            log.info("conference_recording", conference_id=self.settings.conference_id, recording=True)
            return "started"
        self.recording = False
        for member in self.members.values():
            member.heard_notice = False  # a later recording is announced again
        await self._recorder.stop(self)
        log.info("conference_recording", conference_id=self.settings.conference_id, recording=False)
        return "stopped"

    async def _end(self, reason: str) -> None:
        self.ended = True
        if self._on_end is not None:
            self._on_end(self.settings.conference_id, reason)
        with contextlib.suppress(AriError):
            await self._play_bridge(["sound:conf-kicked"] if reason == "ended_by_organizer"
                                    else ["sound:conf-leaderhasleft"])
        for member in list(self.members.values()):
            self._record(member, "leave", reason)
            with contextlib.suppress(AriError):
                await self._ops.hang_up(member.channel_id, "normal")
        self.members.clear()

    async def _play_bridge(self, media: list[str]) -> None:
        await self._ops.play_to_bridge(self.bridge_id, media, uuid.uuid4().hex, self.settings.language)

    def _record(self, m: Member, what: str, reason: str | None) -> None:
        at = self._clock()
        if what == "join":
            m.joined_at = at
        self._timeline.record(self.settings.conference_id, m.person, m.role, what, at, reason, m.leg_id)
        log.info(f"conference_member_{what}", conference_id=self.settings.conference_id, role=m.role,
                 reason=reason, present=len(self.members))
