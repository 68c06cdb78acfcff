"""The conference room's rules with a fake ARI (the real bridge is exercised in tests/integration)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from callctl.conference.codes import Window, new_code
from callctl.conference.room import ORGANIZER, PARTICIPANT, Member, Room, RoomSettings
from callctl.conference.timeline import EventRow, TimelineWriter
from callctl.errors import StoreUnavailable

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


class FakeOps:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.bridged: set[str] = set()
        self.muted: set[str] = set()
        self.moh: set[str] = set()
        self.hung_up: set[str] = set()
        self.removed: list[str] = []

    async def create_bridge(self, bridge_id: str, name: str) -> None:
        self.log.append(("create", bridge_id))

    async def destroy_bridge(self, bridge_id: str) -> None:
        self.log.append(("destroy", bridge_id))

    async def add_to_bridge(self, bridge_id: str, channel_id: str) -> None:
        self.bridged.add(channel_id)

    async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None:
        self.bridged.discard(channel_id)
        self.removed.append(channel_id)

    async def play_to_bridge(self, bridge_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.log.append(("bridge_play", tuple(media)))

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.log.append(("play", (channel_id, tuple(media))))

    async def mute(self, channel_id: str, muted: bool) -> None:
        (self.muted.add if muted else self.muted.discard)(channel_id)

    async def start_moh(self, channel_id: str) -> None:
        self.moh.add(channel_id)

    async def stop_moh(self, channel_id: str) -> None:
        self.moh.discard(channel_id)

    async def hang_up(self, channel_id: str, reason: str = "normal") -> None:
        self.hung_up.add(channel_id)


class Timeline:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str | None]] = []

    def record(self, conference_id: str, person: str, role: str, what: str, at: dt.datetime,
               reason: str | None, leg_id: str) -> None:
        self.rows.append((person, what, reason))


def member(cid: str, role: str = PARTICIPANT) -> Member:
    return Member(channel_id=cid, person=f"{cid}@example.com", role=role, leg_id=cid)


async def open_room(**kw: Any) -> tuple[Room, FakeOps, Timeline, asyncio.Task[None]]:
    ops, timeline = FakeOps(), Timeline()
    room = Room(RoomSettings("c1", "Weekly", **kw), ops, timeline)
    task = asyncio.create_task(room.run())
    return room, ops, timeline, task


async def test_participants_wait_with_music_until_the_organizer_arrives() -> None:
    room, ops, _tl, task = await open_room()
    assert await room.join(member("p1")) == "waiting"
    assert "p1" in ops.moh and "p1" not in ops.bridged
    assert await room.join(member("org", ORGANIZER)) == "joined"
    assert ops.bridged == {"p1", "org"} and not ops.moh
    assert await room.join(member("p2")) == "joined"
    room.leave(member("p1"), "hangup")
    room.leave(member("p2"), "hangup")
    room.leave(member("org", ORGANIZER), "hangup")
    await asyncio.wait_for(task, 2)
    assert ("destroy", room.bridge_id) in ops.log


async def test_a_member_who_hung_up_is_not_removed_from_the_bridge_by_a_request() -> None:
    # Asterisk takes a hung-up channel out of the bridge itself; asking again is a wasted REST call.
    room, ops, timeline, task = await open_room()
    org, p1 = member("org", ORGANIZER), member("p1")
    assert await room.join(org) == "joined" and await room.join(p1) == "joined"
    room.leave(p1, "hangup")
    room.leave(org, "ended")
    await asyncio.wait_for(task, 2)
    assert ops.removed == ["org"]
    assert ("p1@example.com", "leave", "hangup") in timeline.rows and ("bridge_play", ("sound:beeperr",)) in ops.log


async def test_a_code_holds_one_live_leg_and_a_locked_or_full_room_refuses() -> None:
    room, _ops, _tl, task = await open_room(max_members=3)
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    assert await room.join(Member("other-channel", "org@example.com", ORGANIZER, "x")) == "in_use"
    assert await room.command(org, "*1") == ["sound:conf-lockednow"]
    assert await room.join(member("p1")) == "locked"
    assert await room.command(org, "*1") == ["sound:conf-unlockednow"]
    assert await room.join(member("p1")) == "joined"
    assert await room.join(member("p2")) == "joined"
    assert await room.join(member("p3")) == "full"
    assert await room.command(org, "*9") == []
    await asyncio.wait_for(task, 2)


async def test_mute_commands_and_organizer_only_keys() -> None:
    room, ops, _tl, task = await open_room()
    org, p1 = member("org", ORGANIZER), member("p1")
    await room.join(org)
    await room.join(p1)
    assert await room.command(p1, "*6") == ["sound:conf-muted"] and "p1" in ops.muted
    assert await room.command(p1, "*6") == ["sound:conf-unmuted"] and "p1" not in ops.muted
    assert await room.command(p1, "*1") == ["sound:conf-errormenu"]  # participants cannot lock
    assert await room.command(p1, "*#") == ["sound:conf-thereare", "number:1", "sound:conf-otherinparty"]
    assert await room.command(org, "*2") == ["sound:conf-now-muted"] and ops.muted == {"p1"}
    late = member("p2")
    await room.join(late)
    assert "p2" in ops.muted  # a newcomer joins muted while "mute all" is on
    assert "org" not in ops.muted
    await room.command(org, "*9")
    await asyncio.wait_for(task, 2)
    assert ops.hung_up == {"org", "p1", "p2"}


async def test_organizer_leaving_ends_the_conference_after_the_grace() -> None:
    room, ops, timeline, task = await open_room(organizer_leave_grace_s=0.05)
    org = member("org", ORGANIZER)
    await room.join(org)
    await room.join(member("p1"))
    room.leave(org, "hangup")
    await asyncio.wait_for(task, 2)
    assert "p1" in ops.hung_up
    assert ("p1@example.com", "leave", "organizer_left") in timeline.rows


async def test_continue_policy_keeps_the_room_and_admits_newcomers() -> None:
    room, ops, _tl, task = await open_room(organizer_leave_policy="continue")
    org = member("org", ORGANIZER)
    await room.join(org)
    await room.join(member("p1"))
    room.leave(org, "hangup")
    assert await room.join(member("p2")) == "joined"
    assert not ops.hung_up
    room.leave(member("p1"), "hangup")
    room.leave(member("p2"), "hangup")
    await asyncio.wait_for(task, 2)
    # a later room of a conference that already started admits participants directly
    again = Room(RoomSettings("c1", "Weekly", organizer_leave_policy="continue", already_led=True), ops, Timeline())
    again_task = asyncio.create_task(again.run())
    assert await again.join(member("p3")) == "joined"
    again.leave(member("p3"), "hangup")
    await asyncio.wait_for(again_task, 2)


def test_codes_are_random_digits_without_collisions_and_windows_are_half_open() -> None:
    taken = {"12345678"}
    codes = {new_code(taken) for _ in range(200)}
    assert all(len(c) == 8 and c.isdigit() and c[0] != "0" for c in codes)
    assert "12345678" not in codes and len(codes) > 190
    w = Window(T0, T0 + dt.timedelta(hours=1))
    assert w.admission(T0 - dt.timedelta(minutes=15, microseconds=1)) == "too_early"
    assert w.admission(T0 - dt.timedelta(minutes=15)) == "open"
    assert w.admission(T0 + dt.timedelta(hours=1, minutes=29, seconds=59)) == "open"
    assert w.admission(T0 + dt.timedelta(hours=1, minutes=30)) == "over"


class FlakyStore:
    """A conference_event table behind a connection that fails while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.down = False
        self.attempts = 0

    async def write(self, rows: Sequence[EventRow]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.down:
            raise StoreUnavailable("PostgreSQL at db:5432 is unavailable")
        self.batches.append([f"{person} {what}" for _c, person, _r, what, _at, _why, _leg in rows])


async def wait_until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_timeline_rows_are_written_in_batches_in_order_and_kept_while_the_store_is_down() -> None:
    store = FlakyStore()
    writer = TimelineWriter(store.write, min_interval_s=0.05, retry_s=0.01)
    conf, leg = str(uuid.uuid4()), str(uuid.uuid4())
    writer.record(conf, "a@example.com", ORGANIZER, "join", T0, None, leg)
    await wait_until(lambda: store.batches == [["a@example.com join"]], "the first row")  # idle: at once
    for i in range(10):  # a burst: one write takes every row buffered meanwhile
        writer.record(conf, f"p{i}@example.com", PARTICIPANT, "join", T0, None, leg)
    await wait_until(lambda: writer.pending == 0, "the burst")
    assert store.batches[1] == [f"p{i}@example.com join" for i in range(10)]
    store.down = True
    writer.record(conf, "a@example.com", ORGANIZER, "leave", T0, "hangup", leg)
    writer.record(conf, "p0@example.com", PARTICIPANT, "leave", T0, "hangup", leg)
    tried = store.attempts
    await wait_until(lambda: store.attempts >= tried + 3, "retries")
    assert writer.pending == 2 and len(store.batches) == 2  # nothing lost, nothing written
    store.down = False
    await writer.close()
    assert store.batches[2] == ["a@example.com leave", "p0@example.com leave"] and writer.pending == 0


class OldBridges:
    """Asterisk's bridges after an engine restart: a previous engine's room, emptied as its members re-join."""

    def __init__(self) -> None:
        self.members = {"conf-old-1": 2, "conf-old-2": 0, "call-abc": 0, "conf-gone": 1}
        self.destroyed: list[str] = []

    async def bridge_ids(self) -> list[str]:
        return list(self.members)

    async def bridge_channel_count(self, bridge_id: str) -> int | None:
        count = self.members.get(bridge_id)
        if bridge_id == "conf-old-1" and count:
            self.members[bridge_id] = count - 1  # one member re-joins through the new engine per poll
        if bridge_id == "conf-gone":
            del self.members[bridge_id]  # ended by Asterisk meanwhile
        return count if bridge_id != "conf-gone" else None

    async def destroy_bridge(self, bridge_id: str) -> None:
        self.destroyed.append(bridge_id)
        del self.members[bridge_id]


async def test_a_previous_engines_conference_bridges_are_destroyed_once_empty_and_no_other() -> None:
    from callctl.conference.service import ConferenceService

    ops = OldBridges()
    service = ConferenceService(None, ops)  # type: ignore[arg-type]
    await service.clear_old_bridges(ops, poll_s=0.01)
    assert ops.destroyed == ["conf-old-2", "conf-old-1"]  # each once empty; not another app's bridge
    assert set(ops.members) == {"call-abc"}


class SlowAdds(FakeOps):
    """Asterisk slow to carry out one channel's addChannel (held until released), the others at once."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.release = asyncio.Event()
        self.adds_started: list[str] = []

    async def add_to_bridge(self, bridge_id: str, channel_id: str) -> None:
        self.adds_started.append(channel_id)
        if channel_id == self.slow:
            await self.release.wait()
        await super().add_to_bridge(bridge_id, channel_id)


async def test_participants_joining_together_enter_side_by_side_and_what_follows_waits_for_them() -> None:
    ops = SlowAdds(slow="p1")
    room = Room(RoomSettings("c1", "Weekly", organizer_leave_policy="continue", already_led=True), ops, Timeline())
    task = asyncio.create_task(room.run())
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    p1, p2 = member("p1"), member("p2")
    first = asyncio.ensure_future(room.join(p1))
    # Before the change the room awaited p1's addChannel: p2's join waited until it was released.
    assert await asyncio.wait_for(room.join(p2), 2) == "joined"
    assert ops.adds_started == ["org", "p1", "p2"] and not first.done() and "p1" not in ops.bridged
    # A request after the joins (p2's *#) is applied once p1 is in: it counts both others.
    count = asyncio.ensure_future(room.command(p2, "*#"))
    for _ in range(20):  # the room's turns: it is waiting for p1, not answering
        await asyncio.sleep(0)
    assert not count.done()
    ops.release.set()
    assert await first == "joined"
    assert await count == ["sound:conf-thereare", "number:2", "sound:conf-otherinparty"]
    for m in (p1, p2, org):
        room.leave(m, "hangup")
    await asyncio.wait_for(task, 2)
    assert ops.bridged == {"org", "p1", "p2"}  # hung up: Asterisk takes them out itself
