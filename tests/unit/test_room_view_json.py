"""A room's state as the owner publishes it for other nodes' pages (callctl/conference/remote.py): what
the page reads back is what the room showed."""

from __future__ import annotations

import datetime as dt
import json

from callctl.conference.actions import MemberView, RoomView
from callctl.conference.remote import view_from_json, view_to_json


def test_a_published_room_view_reads_back_the_same_through_json() -> None:
    view = RoomView((MemberView("org@example.com", "organizer", dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC), False,
                                False),
                     MemberView("p0@example.com", "participant", None, True, True)),
                    locked=True, participants_muted=True, recording=False)
    assert view_from_json(json.loads(json.dumps(view_to_json(view)))) == view


def test_an_empty_document_is_an_empty_unlocked_room() -> None:
    assert view_from_json({}) == RoomView((), False, False, False)
