"""Voicemail messages (SQL): the facts of each message next to its recording row (box, caller,
number called, e-mail delivery). The audio, retention and holds are the recording's (recordings.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from callctl.store.db import translated
from callctl.store.recordings import _COLUMNS, Recording

_translated = translated("voicemail store")


@dataclass(frozen=True)
class Message:
    recording: Recording
    box: str
    caller: str
    called: str
    email_to: str | None
    emailed_at: dt.datetime | None
    email_error: str | None


def _message(row: Any) -> Message:
    data = dict(row)
    facts = {k: data.pop(k) for k in ("box", "caller", "called", "email_to", "emailed_at", "email_error")}
    return Message(recording=Recording(**data), **facts)


_SELECT = (f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}, m.box, m.caller, m.called, "
           "m.email_to, m.emailed_at, m.email_error FROM voicemail_message m JOIN recording r ON r.id = m.recording_id")


@_translated
async def add(db: Any, recording_id: uuid.UUID, *, box: str, caller: str, called: str, email_to: str | None) -> None:
    await db.execute("INSERT INTO voicemail_message (recording_id, box, caller, called, email_to) "
                     "VALUES ($1, $2, $3, $4, $5)", recording_id, box, caller, called, email_to)


@_translated
async def mark_emailed(db: Any, recording_id: uuid.UUID, at: dt.datetime | None, error: str | None) -> None:
    await db.execute("UPDATE voicemail_message SET emailed_at = $2, email_error = $3 WHERE recording_id = $1",
                     recording_id, at, error)


@_translated
async def messages(db: Any, box: str | None = None) -> list[Message]:
    rows = await db.fetch(f"{_SELECT} WHERE ($1::text IS NULL OR m.box = $1) ORDER BY r.started_at", box)
    return [_message(r) for r in rows]


@_translated
async def get(db: Any, recording_id: uuid.UUID) -> Message | None:
    row = await db.fetchrow(f"{_SELECT} WHERE m.recording_id = $1", recording_id)
    return _message(row) if row is not None else None
