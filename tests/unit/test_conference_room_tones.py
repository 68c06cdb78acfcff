"""The room's entry tone (issue 17): one bridge request per burst of joins, none for a member alone (who
hears that they are the only person), and always before what follows the joins (a leave's tone)."""

from __future__ import annotations

import asyncio

from callctl.conference.room import ORGANIZER, TONE_ENTER, TONE_LEAVE
from tests.unit.test_conference_room import member, open_room


async def test_joins_queued_together_sound_one_entry_tone_and_a_member_alone_hears_no_tone() -> None:
    room, ops, _tl, task = await open_room(organizer_leave_policy="continue", already_led=True)
    org = member("org", ORGANIZER)
    assert await room.join(org) == "joined"
    assert ops.log == [("create", room.bridge_id), ("play", ("org", ("sound:conf-onlyperson",)))]
    # Five callers keyed their codes in the same instant: five joins queued before the room runs.
    joins = [asyncio.ensure_future(room.join(member(f"p{n}"))) for n in range(5)]
    assert await asyncio.gather(*joins) == ["joined"] * 5
    assert [entry for entry in ops.log if entry[0] == "bridge_play"] == [("bridge_play", (TONE_ENTER,))]
    # One more, on its own: its own tone.
    assert await room.join(member("p5")) == "joined"
    assert [entry for entry in ops.log if entry[0] == "bridge_play"] == [("bridge_play", (TONE_ENTER,))] * 2
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
    tones = [entry[1] for entry in ops.log if entry[0] == "bridge_play"]
    assert tones == [(TONE_ENTER,), (TONE_LEAVE,)]
    room.leave(member("p2"), "hangup")
    room.leave(org, "hangup")
    await asyncio.wait_for(task, 2)
