"""Recording metadata, notices, objections, holds and the deletion audit (SQL)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from callctl.store.db import connection, translated

_translated = translated("recording store")

_COLUMNS = ("id, source, conference_id, call_id, account_id, asterisk_name, bridge_id, format, state, started_at, "
            "ended_at, duration_ms, size_bytes, sha256, location, retention_class, legal_hold, hold_reason, error, "
            "node_id")


@dataclass(frozen=True)
class Recording:
    id: uuid.UUID
    source: str
    conference_id: uuid.UUID | None
    call_id: uuid.UUID | None
    account_id: uuid.UUID | None
    asterisk_name: str
    bridge_id: str
    format: str
    state: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_ms: int | None
    size_bytes: int | None
    sha256: str | None
    location: str | None
    retention_class: str
    legal_hold: bool
    hold_reason: str | None
    error: str | None
    node_id: str | None = None  # the node whose engine made it (Settings.node); None: made before 0022


def _recording(row: Any) -> Recording:
    return Recording(**dict(row))


@_translated
async def set_account_recording(db: Any, account_id: uuid.UUID, on: bool) -> bool:
    """Switch the account's automatic call recording (its option); False if there is no such account."""
    return bool(await db.execute("UPDATE account SET recording = $2 WHERE id = $1", account_id, on) == "UPDATE 1")


@_translated
async def create(db: Any, *, recording_id: uuid.UUID, source: str, asterisk_name: str, bridge_id: str, fmt: str,
                 started_at: dt.datetime, retention_class: str, conference_id: uuid.UUID | None = None,
                 call_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None,
                 node_id: str | None = None) -> Recording:
    row = await db.fetchrow(
        f"INSERT INTO recording (id, source, conference_id, call_id, account_id, asterisk_name, bridge_id, format, "
        f"state, started_at, retention_class, node_id) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'recording', $9, $10, $11) RETURNING {_COLUMNS}",
        recording_id, source, conference_id, call_id, account_id, asterisk_name, bridge_id, fmt, started_at,
        retention_class, node_id)
    return _recording(row)


@_translated
async def add_notice(db: Any, recording_id: uuid.UUID, party: str, leg_id: str | None, prompt: str,
                     language: str, heard_at: dt.datetime) -> None:
    await db.execute("INSERT INTO recording_notice (recording_id, party, leg_id, prompt, language, heard_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6)", recording_id, party, leg_id, prompt, language, heard_at)


@_translated
async def add_objection(db: Any, recording_id: uuid.UUID, leg_id: str, key: str, at: dt.datetime) -> None:
    await db.execute("UPDATE recording_notice SET objected_at = $3, objection_key = $4 "
                     "WHERE recording_id = $1 AND leg_id = $2", recording_id, leg_id, at, key)


@_translated
async def notices(db: Any, recording_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT party, leg_id, prompt, language, heard_at, objected_at, objection_key "
                          "FROM recording_notice WHERE recording_id = $1 ORDER BY id", recording_id)
    return [dict(r) for r in rows]


@_translated
async def finish(db: Any, recording_id: uuid.UUID, *, ended_at: dt.datetime, duration_ms: int | None,
                 size_bytes: int, sha256: str, location: str) -> None:
    await db.execute("UPDATE recording SET state = 'stored', ended_at = $2, duration_ms = $3, size_bytes = $4, "
                     "sha256 = $5, location = $6, error = NULL WHERE id = $1",
                     recording_id, ended_at, duration_ms, size_bytes, sha256, location)


@_translated
async def fail(db: Any, recording_id: uuid.UUID, ended_at: dt.datetime, error: str) -> None:
    await db.execute("UPDATE recording SET state = 'failed', ended_at = coalesce(ended_at, $2), error = $3 "
                     "WHERE id = $1", recording_id, ended_at, error)


@_translated
async def discard(db: Any, recording_id: uuid.UUID, ended_at: dt.datetime, rule: str, detail: dict[str, Any]) -> None:
    """An objection: the recording keeps its row (notice, objection), loses its content; audited."""
    async with connection(db) as conn, conn.transaction():
        await conn.execute("UPDATE recording SET state = 'discarded', ended_at = coalesce(ended_at, $2), "
                           "size_bytes = NULL, sha256 = NULL, location = NULL WHERE id = $1", recording_id, ended_at)
        await conn.execute("INSERT INTO recording_audit (recording_id, action, rule, detail) "
                           "VALUES ($1, 'discarded', $2, $3::jsonb)", recording_id, rule, json.dumps(detail))


@_translated
async def get(db: Any, recording_id: uuid.UUID) -> Recording | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM recording WHERE id = $1", recording_id)
    return _recording(row) if row else None


@_translated
async def in_progress(db: Any) -> list[Recording]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM recording WHERE state = 'recording' ORDER BY started_at")
    return [_recording(r) for r in rows]


@_translated
async def list_recordings(db: Any, *, account_id: uuid.UUID | None = None,
                          conference_id: uuid.UUID | None = None) -> list[Recording]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM recording WHERE ($1::uuid IS NULL OR account_id = $1) "
                          "AND ($2::uuid IS NULL OR conference_id = $2) ORDER BY started_at",
                          account_id, conference_id)
    return [_recording(r) for r in rows]


@_translated
async def of_person(db: Any, *, email: str | None = None, number: str | None = None) -> list[Recording]:
    """Recordings a person is in: by e-mail, conferences they organised or heard the notice in; by
    number, the calls (CDR legs) and conferences they called from or were called on."""
    if email is not None:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM recording WHERE conference_id IN "
            "(SELECT id FROM conference WHERE lower(organizer_email) = lower($1)) "
            "OR id IN (SELECT recording_id FROM recording_notice WHERE lower(party) = lower($1)) ORDER BY started_at",
            email)
    else:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM recording WHERE call_id IN "
            "(SELECT call_id FROM cdr WHERE from_number = $1 OR to_number = $1) "
            "OR conference_id::text IN (SELECT conference_id FROM cdr WHERE (from_number = $1 OR to_number = $1) "
            "AND conference_id IS NOT NULL) ORDER BY started_at", number)
    return [_recording(r) for r in rows]


@_translated
async def purge_candidates(db: Any) -> list[tuple[Recording, bool | None]]:
    """Every recording with its account's recording option now (None: the account is gone)."""
    rows = await db.fetch(f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}, "
                          "a.recording AS account_recording, a.id IS NOT NULL AS account_exists "
                          "FROM recording r LEFT JOIN account a ON a.id = r.account_id ORDER BY r.started_at")
    out = []
    for row in rows:
        data = dict(row)
        exists = data.pop("account_exists")
        option = data.pop("account_recording")
        out.append((Recording(**data), option if exists else None))
    return out


@_translated
async def delete(db: Any, recording_id: uuid.UUID, rule: str, detail: dict[str, Any]) -> bool:
    """Delete the row (notices go with it) and append the audit, in one transaction."""
    async with connection(db) as conn, conn.transaction():
        gone = await conn.execute("DELETE FROM recording WHERE id = $1 AND NOT legal_hold", recording_id)
        if gone != "DELETE 1":
            return False
        await conn.execute("INSERT INTO recording_audit (recording_id, action, rule, detail) "
                           "VALUES ($1, 'deleted', $2, $3::jsonb)", recording_id, rule, json.dumps(detail))
        return True


@_translated
async def set_hold(db: Any, recording_id: uuid.UUID, held: bool, reason: str | None) -> bool:
    async with connection(db) as conn, conn.transaction():
        done = await conn.execute("UPDATE recording SET legal_hold = $2, hold_reason = $3 WHERE id = $1",
                                  recording_id, held, reason if held else None)
        if done != "UPDATE 1":
            return False
        await conn.execute("INSERT INTO recording_audit (recording_id, action, rule, detail) "
                           "VALUES ($1, $2, 'legal_hold', $3::jsonb)", recording_id,
                           "held" if held else "released", json.dumps({"reason": reason}))
        return True


@_translated
async def audit(db: Any, recording_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT at, recording_id, action, rule, detail FROM recording_audit "
                          "WHERE $1::uuid IS NULL OR recording_id = $1 ORDER BY id", recording_id)
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


@_translated
async def append_audit(db: Any, recording_id: uuid.UUID, action: str, rule: str, detail: dict[str, Any]) -> None:
    await db.execute("INSERT INTO recording_audit (recording_id, action, rule, detail) VALUES ($1, $2, $3, $4::jsonb)",
                     recording_id, action, rule, json.dumps(detail))
