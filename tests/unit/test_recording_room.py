"""A conference room's recording rules with a fake ARI and a fake recorder: the notice comes
before the bridge, start and stop are organizer-only, the recording never outlives the room."""

from __future__ import annotations

import asyncio

from callctl.conference.room import ORGANIZER, Member, Room, RoomSettings
from tests.unit.test_conference_room import FakeOps, Timeline, member


class FakeRecorder:
    def __init__(self, ops: FakeOps, works: bool = True) -> None:
        self.ops = ops
        self.works = works
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def start(self, room: Room) -> bool:
        self.calls.append(("start", tuple(m.channel_id for m in room.present)))
        for m in room.present:
            m.heard_notice = self.works
        return self.works

    async def stop(self, room: Room) -> None:
        self.calls.append(("stop", ()))
        self.ops.log.append(("recording_stopped", room.bridge_id))

    async def tell(self, room: Room, members: list[Member]) -> None:
        self.calls.append(("tell", tuple(m.channel_id for m in members)))
        # Told while still outside the bridge: the bridge has not got them yet.
        assert not any(m.channel_id in self.ops.bridged for m in members)
        for m in members:
            m.heard_notice = True


async def open_room(works: bool = True) -> tuple[Room, FakeOps, FakeRecorder, asyncio.Task[None]]:
    ops = FakeOps()
    recorder = FakeRecorder(ops, works)
    room = Room(RoomSettings("c1", "Weekly"), ops, Timeline(), recorder=recorder)
    return room, ops, recorder, asyncio.create_task(room.run())


async def test_star_three_is_the_organizers_and_starts_after_telling_everyone_present() -> None:
    room, _ops, recorder, task = await open_room()
    org, p1 = member("org", ORGANIZER), member("p1")
    await room.join(org)
    await room.join(p1)
    assert await room.command(p1, "*3") == ["sound:conf-errormenu"] and not room.recording
    assert await room.command(org, "*3") == ["sound:conf-now-recording"] and room.recording
    assert recorder.calls == [("start", ("org", "p1"))]
    assert await room.set_recording(True) == "already_recording"
    assert await room.command(org, "*3") == ["sound:beep"] and not room.recording
    assert recorder.calls[-1] == ("stop", ())
    assert await room.set_recording(False) == "not_recording"
    await room.command(org, "*9")
    await asyncio.wait_for(task, 2)


async def test_a_newcomer_to_a_recorded_room_is_told_before_entering_the_bridge_once() -> None:
    room, ops, recorder, task = await open_room()
    org = member("org", ORGANIZER)
    await room.join(org)
    assert await room.set_recording(True) == "started"
    assert await room.join(member("p1")) == "joined"  # not told on their call: the room tells them
    told_before = member("p2")
    told_before.heard_notice = True  # heard it on their own call before asking to join
    assert await room.join(told_before) == "joined"
    assert [c for c in recorder.calls if c[0] == "tell"] == [("tell", ("p1",))]
    assert ops.bridged == {"org", "p1", "p2"}
    # Stopped then started again: announced again to everyone present.
    assert await room.set_recording(False) == "stopped"
    assert not any(m.heard_notice for m in room.members.values())
    assert await room.set_recording(True) == "started"
    assert recorder.calls[-1] == ("start", ("org", "p1", "p2"))
    await room.command(org, "*9")
    await asyncio.wait_for(task, 2)


async def test_a_refused_start_is_said_and_a_room_that_ends_stops_its_recording_first() -> None:
    room, _ops, _rec, task = await open_room(works=False)
    org = member("org", ORGANIZER)
    await room.join(org)
    assert await room.command(org, "*3") == ["sound:tt-somethingwrong"] and not room.recording
    await room.command(org, "*9")
    await asyncio.wait_for(task, 2)

    room, ops, _recorder, task = await open_room()
    await room.join(org := member("org", ORGANIZER))
    assert await room.set_recording(True) == "started"
    room.leave(org, "hangup")
    await asyncio.wait_for(task, 2)
    stopped = ops.log.index(("recording_stopped", room.bridge_id))
    assert stopped < ops.log.index(("destroy", room.bridge_id))
    assert await room.set_recording(True) == "ended"  # never left waiting on a closed room

