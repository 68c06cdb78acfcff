"""Conference recording: the room's recorder (``callctl.conference.room.RoomRecorder``) over the
recording service, one active recording per room at most. It sees rooms and members through the
small views below (the conference package is not imported: features sit side by side)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from callctl.recording import rules
from callctl.recording.service import Active, Party, RecordingService


class Member(Protocol):
    """A room member (``callctl.conference.room.Member``)."""

    channel_id: str
    person: str
    leg_id: str
    language: str
    heard_notice: bool


class _Settings(Protocol):
    @property
    def conference_id(self) -> str: ...


class Room(Protocol):
    """A conference room (``callctl.conference.room.Room``)."""

    @property
    def bridge_id(self) -> str: ...
    @property
    def settings(self) -> _Settings: ...
    @property
    def present(self) -> Sequence[Member]: ...


def _party(m: Member) -> Party:
    return Party(m.channel_id, m.person, m.leg_id, m.language)


class ConferenceRecorder:
    def __init__(self, service: RecordingService) -> None:
        self._service = service
        self._active: dict[str, Active] = {}  # bridge id -> its recording

    async def start(self, room: Room) -> bool:
        present = room.present
        active = await self._service.start(rules.CONFERENCE, room.bridge_id, [_party(m) for m in present],
                                           conference_id=room.settings.conference_id)
        if active is None:
            return False
        for m in present:
            m.heard_notice = m.channel_id in active.heard
        self._active[room.bridge_id] = active
        return True

    async def stop(self, room: Room) -> None:
        active = self._active.pop(room.bridge_id, None)
        if active is not None:
            await self._service.stop(active)

    async def tell(self, room: Room, members: Sequence[Member]) -> None:
        """A newcomer to a recorded room hears the notice (the room waits until it is over)."""
        active = self._active.get(room.bridge_id)
        heard = await self._service.tell(rules.CONFERENCE, [_party(m) for m in members], active)
        channels = {party.channel_id for party, _prompt, _at in heard}
        for m in members:
            m.heard_notice = m.channel_id in channels

    async def tell_before_join(self, room: Room, member: Member,
                               play: Callable[[list[str]], Awaitable[Any]]) -> None:
        """A caller about to join a recorded room hears the notice on their own call first."""
        active = self._active.get(room.bridge_id)
        if active is None:
            return
        prompt, media = rules.notice_media(rules.CONFERENCE, member.language)
        await play([media])
        member.heard_notice = True
        await self._service.record_heard(active, _party(member), prompt)

    def recording_id(self, room: Room) -> uuid.UUID | None:
        active = self._active.get(room.bridge_id)
        return active.id if active else None
