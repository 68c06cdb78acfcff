"""An organizer-paid leg gets Asterisk's cut-off before it enters the room (ConferenceService._join):
an engine killed right after the join leaves no caller in the room without a limit. Fakes for the room,
the pool and ARI; the order of what Asterisk is asked is the whole point."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from callctl.conference import minutes
from callctl.conference import service as conference_service
from callctl.conference.room import PARTICIPANT
from callctl.conference.service import ConferenceService, EntryOptions
from callctl.errors import CallHungUp
from callctl.freeminutes import ASTERISK_GRACE_S, MeterTerms
from callctl.store import conferences as conf_store
from callctl.store.minutes import Hold

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
HOLD_S = 120


class Asterisk:
    """What the meter and the room asked Asterisk, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    async def set_var(self, channel_id: str, name: str, value: str) -> None:
        self.asked.append(("set_var", channel_id, name, value))

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.asked.append(("play", channel_id))

    async def hang_up(self, channel_id: str, reason: str = "normal") -> None:
        self.asked.append(("hang_up", channel_id))

    async def stop_playback(self, playback_id: str) -> None:
        pass


class RoomStandIn:
    recording = False
    ended = False

    def __init__(self, asterisk: Asterisk) -> None:
        self._asterisk = asterisk

    async def join(self, member: Any) -> str:
        self._asterisk.asked.append(("join", member.channel_id))  # the leg is in the bridge from here
        return "joined"

    def leave(self, member: Any, reason: str) -> None:
        self._asterisk.asked.append(("leave", member.channel_id))


class Result:
    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}
        self.conference_id = self.person = self.role = None


class CallerHangsUpInTheRoom:
    channel_id = "chan-1"
    call_id = str(uuid.uuid4())
    language = "en"

    def __init__(self) -> None:
        self.result = Result()

    def clear_digits(self) -> None:
        pass

    async def read_digit(self, timeout_s: float) -> str | None:
        raise CallHungUp("the caller hung up")


def _conference() -> conf_store.Conference:
    return conf_store.Conference(uuid.uuid4(), "Weekly", NOW, NOW + dt.timedelta(hours=1), "org@example.com",
                                 ("+33170000000", "+33170000009"), "en", 10, "continue", 0, 600, 600, None, NOW,
                                 None, None)


async def test_an_organizer_paid_leg_has_its_asterisk_limit_before_it_enters_the_room(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asterisk = Asterisk()
    settled: list[tuple[uuid.UUID, int]] = []

    async def open_leg(*_: Any, **__: Any) -> Hold:
        return Hold(uuid.uuid4(), HOLD_S)

    async def settle(_pool: Any, hold_id: uuid.UUID, used_s: int) -> int:
        settled.append((hold_id, used_s))
        return used_s

    monkeypatch.setattr(conference_service.minutes, "open_leg", open_leg)
    monkeypatch.setattr(minutes.store, "settle", settle)
    service = ConferenceService(None, None, meter_ops=asterisk)  # type: ignore[arg-type]
    monkeypatch.setattr(service, "_room_for", lambda conf: RoomStandIn(asterisk))
    line = minutes.PaidLine(uuid.uuid4(), MeterTerms(hold_s=HOLD_S), None, frozenset({"+33170000000"}),
                            ("sorry",), ("warning",), ("exhausted",))
    call = CallerHangsUpInTheRoom()

    async def play(media: list[str], interruptible: bool = True) -> None:
        asterisk.asked.append(("play", call.channel_id))

    match = conf_store.CodeMatch(_conference(), "alice@example.com", PARTICIPANT)
    with pytest.raises(CallHungUp):
        await service._join(call, play, match, EntryOptions(), "+33612345678", "+33170000000", line)  # type: ignore[arg-type]
    limit = ("set_var", "chan-1", "TIMEOUT(absolute)", str(HOLD_S + ASTERISK_GRACE_S))
    # Set once, before the join (the meter's start does not set it again), then the leg leaves.
    assert asterisk.asked == [limit, ("join", "chan-1"), ("leave", "chan-1")]
    assert len(settled) == 1
