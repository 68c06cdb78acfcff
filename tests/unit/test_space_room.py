"""The room's command inbox for the Online Space (issue 19): same effects and timeline rows as the
DTMF menu, organizer actions refused to participants by the room itself, live snapshots."""

from __future__ import annotations

import asyncio

from callctl.conference.room import ORGANIZER, PARTICIPANT, Action, Room, RoomSettings
from tests.unit.test_conference_room import FakeOps, Timeline, member


async def _room() -> tuple[Room, FakeOps, Timeline, asyncio.Task[None], list[str]]:
    ops, timeline, changes = FakeOps(), Timeline(), []
    room = Room(RoomSettings("c1", "Weekly"), ops, timeline, on_change=changes.append)
    task = asyncio.create_task(room.run())
    assert await room.join(member("org", ORGANIZER)) == "joined"
    assert await room.join(member("p1")) == "joined"
    assert await room.join(member("p2")) == "joined"
    return room, ops, timeline, task, changes


ORG = "org@example.com"


async def test_the_organizer_mutes_one_participant_through_the_room() -> None:
    room, ops, _timeline, task, changes = await _room()
    before = len(changes)
    assert await room.act(Action("mute", ORG, ORGANIZER, "p1@example.com")) == "done"
    assert ops.muted == {"p1"}
    view = room.view()
    assert [(m.person, m.muted) for m in view.members] == [
        (ORG, False), ("p1@example.com", True), ("p2@example.com", False)]
    assert view.members[0].role == ORGANIZER  # the organizer is listed first
    assert len(changes) > before  # the live pages hear of it
    assert await room.act(Action("unmute", ORG, ORGANIZER, "p1@example.com")) == "done"
    assert ops.muted == set()
    task.cancel()


async def test_a_participant_cannot_lock_mute_others_remove_or_end() -> None:
    room, ops, timeline, task, _ = await _room()
    p1 = "p1@example.com"
    for kind, target in (("lock", None), ("mute_all", None), ("end", None), ("record", None),
                         ("remove", "p2@example.com"), ("mute", "p2@example.com"), ("mute", ORG)):
        assert await room.act(Action(kind, p1, PARTICIPANT, target)) == "forbidden", kind
    assert not room.locked and not ops.muted and not ops.hung_up and not room.ended
    assert [r for r in timeline.rows if r[1] == "leave"] == []
    # but mutes themselves
    assert await room.act(Action("mute", p1, PARTICIPANT, p1)) == "done"
    assert ops.muted == {"p1"}
    assert await room.act(Action("explode", p1, PARTICIPANT, None)) == "unknown_action"
    task.cancel()


async def test_lock_from_the_space_refuses_newcomers_like_star_one() -> None:
    room, _ops, _timeline, task, _ = await _room()
    assert await room.act(Action("lock", ORG, ORGANIZER)) == "done"
    assert room.view().locked
    assert await room.join(member("p3")) == "locked"
    assert await room.act(Action("unlock", ORG, ORGANIZER)) == "done"
    assert await room.join(member("p3")) == "joined"
    task.cancel()


async def test_mute_all_mutes_participants_and_newcomers_join_muted() -> None:
    room, ops, _timeline, task, _ = await _room()
    assert await room.act(Action("mute_all", ORG, ORGANIZER)) == "done"
    assert ops.muted == {"p1", "p2"}
    assert await room.join(member("p3")) == "joined"
    assert ops.muted == {"p1", "p2", "p3"} and room.view().participants_muted
    task.cancel()


async def test_remove_takes_one_out_hangs_up_and_writes_a_leave_row() -> None:
    room, ops, timeline, task, _ = await _room()
    assert await room.act(Action("remove", ORG, ORGANIZER, "p2@example.com")) == "done"
    assert ops.hung_up == {"p2"} and "p2" in ops.removed
    assert ("p2@example.com", "leave", "removed_by_organizer") in timeline.rows
    assert [m.person for m in room.view().members] == [ORG, "p1@example.com"]
    assert await room.act(Action("remove", ORG, ORGANIZER, "p2@example.com")) == "not_in_call"
    task.cancel()


async def test_end_from_the_space_is_star_nine() -> None:
    ended: list[tuple[str, str]] = []
    ops, timeline = FakeOps(), Timeline()
    room = Room(RoomSettings("c1", "Weekly"), ops, timeline, on_end=lambda c, r: ended.append((c, r)))
    task = asyncio.create_task(room.run())
    await room.join(member("org", ORGANIZER))
    await room.join(member("p1"))
    assert await room.act(Action("end", ORG, ORGANIZER)) == "done"
    await asyncio.wait_for(task, 5)
    assert ops.hung_up == {"org", "p1"}
    assert ended == [("c1", "ended_by_organizer")]
    assert sorted(r for r in timeline.rows if r[1] == "leave") == [
        (ORG, "leave", "ended_by_organizer"), ("p1@example.com", "leave", "ended_by_organizer")]
    assert await room.act(Action("lock", ORG, ORGANIZER)) == "ended"


async def test_recording_from_the_space_without_a_recorder_is_unavailable() -> None:
    room, _ops, _timeline, task, _ = await _room()
    assert await room.act(Action("record", ORG, ORGANIZER)) == "unavailable"
    task.cancel()


class FakeRecorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self, room: Room) -> bool:
        self.calls.append("start")  # the real one plays the notice to everyone first
        return True

    async def stop(self, room: Room) -> None:
        self.calls.append("stop")

    async def tell(self, room: Room, members: list[object]) -> None:
        self.calls.append("tell")


async def test_recording_from_the_space_goes_through_the_rooms_recorder_like_star_three() -> None:
    ops, timeline, recorder = FakeOps(), Timeline(), FakeRecorder()
    room = Room(RoomSettings("c1", "Weekly"), ops, timeline, recorder=recorder)  # type: ignore[arg-type]
    task = asyncio.create_task(room.run())
    await room.join(member("org", ORGANIZER))
    assert await room.act(Action("record", ORG, ORGANIZER)) == "done"
    assert room.view().recording and recorder.calls == ["start"]
    assert await room.act(Action("stop_recording", ORG, ORGANIZER)) == "done"
    assert not room.view().recording and recorder.calls == ["start", "stop"]
    task.cancel()
