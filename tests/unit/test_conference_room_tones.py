"""The room's entry tone (issue 17): one bridge request per burst of joins, none for a member alone (who
hears that they are the only person), and always before what follows the joins (a leave's tone). Tones
are played by the room's own tone task: a join never waits for Asterisk's answer to a tone."""

from __future__ import annotations

import asyncio
from typing import Any

from callctl.conference.room import ORGANIZER, TONE_ENTER, TONE_LEAVE, JoinTimes, Room, RoomSettings
from tests.support.waiting import wait_for_async
from tests.unit.test_conference_room import FakeOps, Timeline, member, open_room


def _tones(ops: FakeOps) -> list[Any]:
    return [entry for entry in ops.log if entry[0] == "bridge_play"]


async def test_joins_queued_together_sound_one_entry_tone_and_a_member_alone_hears_no_tone() -> None:
    room, ops, _tl, task = await open_room(organizer_leave_policy="continue", already_led=True)
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    assert ops.log == [("create", room.bridge_id), ("play", ("org", ("sound:conf-onlyperson",)))]
    # Five callers keyed their codes in the same instant: five joins queued before the room runs.
    joins = [asyncio.ensure_future(room.join(member(f"p{n}"))) for n in range(5)]
    assert await asyncio.gather(*joins) == ["joined"] * 5
    await wait_for_async(lambda: _tones(ops), "the entry tone")
    assert _tones(ops) == [("bridge_play", (TONE_ENTER,))]
    # One more, on its own: its own tone.
    assert await room.join(member("p5")) == "joined"
    await wait_for_async(lambda: len(_tones(ops)) == 2, "the second entry tone")
    assert _tones(ops) == [("bridge_play", (TONE_ENTER,))] * 2
    for n in range(6):
        room.leave(member(f"p{n}"), "hangup")
    room.leave(org, "hangup")
    await asyncio.wait_for(task, 2)


async def test_the_entry_tone_of_queued_joins_plays_before_a_leave_queued_after_them() -> None:
    room, ops, _tl, task = await open_room(organizer_leave_policy="continue", already_led=True)
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    first = asyncio.ensure_future(room.join(member("p1")))
    second = asyncio.ensure_future(room.join(member("p2")))
    # Queued after the two joins: the tasks' first steps run in the order they were scheduled.
    asyncio.get_running_loop().call_soon(room.leave, member("p1"), "hangup")
    assert await asyncio.gather(first, second) == ["joined", "joined"]
    assert await room.command(org, "*#") == ["sound:conf-thereare", "number:1", "sound:conf-otherinparty"]
    await wait_for_async(lambda: len(_tones(ops)) == 2, "both tones")
    assert [entry[1] for entry in _tones(ops)] == [(TONE_ENTER,), (TONE_LEAVE,)]
    room.leave(member("p2"), "hangup")
    room.leave(org, "hangup")
    await asyncio.wait_for(task, 2)


class SlowTones(FakeOps):
    """Asterisk slow to answer a bridge playback (a loaded machine: tens of milliseconds, here until told)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def play_to_bridge(self, bridge_id: str, media: list[str], playback_id: str, language: str) -> None:
        await self.release.wait()
        await super().play_to_bridge(bridge_id, media, playback_id, language)


async def test_a_join_never_waits_for_asterisk_to_answer_a_tone_and_tones_keep_their_order() -> None:
    ops = SlowTones()
    room = Room(RoomSettings("c1", "Weekly", organizer_leave_policy="continue", already_led=True), ops, Timeline())
    task = asyncio.create_task(room.run())
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    assert await room.join(member("p1")) == "joined"  # its entry tone is now waiting for Asterisk
    room.leave(member("p1"), "ended")  # a leave tone after it
    p2 = member("p2")
    times = p2.times = JoinTimes()
    # Before the fix the room awaited the tone's answer: this join waited until the tone was released.
    assert await asyncio.wait_for(room.join(p2), 2) == "joined"
    assert times.bridged >= times.taken >= times.queued > 0
    assert _tones(ops) == []
    ops.release.set()
    await wait_for_async(lambda: len(_tones(ops)) == 3, "the tones once Asterisk answers")
    assert [entry[1] for entry in _tones(ops)] == [(TONE_ENTER,), (TONE_LEAVE,), (TONE_ENTER,)]
    for m in ("p2", "org"):
        room.leave(member(m, ORGANIZER if m == "org" else "participant"), "hangup")
    await asyncio.wait_for(task, 2)
