"""What the Online Space may ask of a conference room and what it sees of one (pure, typed): the
room's command inbox takes these ``Action``s and answers with ``RoomView`` snapshots."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

ORGANIZER = "organizer"


@dataclass(frozen=True)
class Action:
    """What a person asks of the room from the Online Space (callctl.web).

    ``kind``: mute / unmute (``target``; a participant only themselves), mute_all / unmute_all,
    remove (``target``), lock / unlock, record / stop_recording, end. ``by`` and ``role`` say who
    asks: the room refuses organizer actions to participants even if the web layer did not.
    """

    kind: str
    by: str
    role: str
    target: str | None = None


ORGANIZER_ACTIONS = frozenset({"mute_all", "unmute_all", "remove", "lock", "unlock", "record", "stop_recording",
                               "end"})
ACTIONS = ORGANIZER_ACTIONS | {"mute", "unmute"}


@dataclass(frozen=True)
class MemberView:
    person: str
    role: str
    joined_at: dt.datetime | None
    muted: bool
    waiting: bool  # in the conference, held outside the bridge until the organizer arrives


@dataclass(frozen=True)
class RoomView:
    """A snapshot of a live room for the Online Space (copied, never shared with the room task)."""

    members: tuple[MemberView, ...]
    locked: bool
    participants_muted: bool
    recording: bool
