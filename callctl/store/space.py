"""The conference Online Space in PostgreSQL (SQL): personal links (hashed tokens), browser sessions,
chat messages and shared documents, all deleted with their conference."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from callctl.conference.links import new_token, token_hash
from callctl.errors import StoreError
from callctl.store.conferences import Conference, _conf
from callctl.store.db import connection as _connection
from callctl.store.db import translated

_translated = translated("space store")
_C_COLUMNS = ", ".join("f." + k for k in Conference.__dataclass_fields__)


class SpaceLimit(StoreError):
    """A document over the conference's count limit."""

    code = "space_limit"


@dataclass(frozen=True)
class Link:
    """An opened link or a session: who, in which conference, and the link's state columns."""

    conference: Conference
    email: str
    role: str
    revoked_at: dt.datetime | None
    link_hash: bytes
    csrf: str = ""


@dataclass(frozen=True)
class Message:
    id: int
    author: str
    role: str
    body: str
    at: dt.datetime


@dataclass(frozen=True)
class Document:
    id: uuid.UUID
    uploaded_by: str
    name: str
    media_type: str
    size: int
    uploaded_at: dt.datetime


@_translated
async def issue_links(db: Any, conference_id: uuid.UUID, email: str | None = None) -> dict[str, str]:
    """A new link for each person holding a live code (or only ``email``): the old ones stop opening and
    their sessions end. Returns email -> token (the only time a token exists in clear)."""
    out: dict[str, str] = {}
    async with _connection(db) as conn, conn.transaction():
        people = await conn.fetch(
            "SELECT email, role FROM conference_code WHERE conference_id=$1 AND revoked_at IS NULL "
            "AND ($2::text IS NULL OR email=$2)", conference_id, email.lower() if email else None)
        if email is not None and not people:
            raise StoreError(f"conference {conference_id}: {email} has no live code (not invited, or cancelled)")
        await _revoke(conn, conference_id, email)
        for p in people:
            token = new_token()
            await conn.execute("INSERT INTO conference_link (token_hash, conference_id, email, role) "
                               "VALUES ($1,$2,$3,$4)", token_hash(token), conference_id, p["email"], p["role"])
            out[p["email"]] = token
    return out


async def _revoke(conn: Any, conference_id: uuid.UUID, email: str | None) -> int:
    rows = await conn.fetch(
        "UPDATE conference_link SET revoked_at=now() WHERE conference_id=$1 AND revoked_at IS NULL "
        "AND ($2::text IS NULL OR email=$2) RETURNING token_hash", conference_id, email.lower() if email else None)
    hashes = [r["token_hash"] for r in rows]
    await conn.execute("DELETE FROM conference_space_session WHERE link_hash = ANY($1::bytea[])", hashes)
    return len(hashes)


@_translated
async def revoke_links(db: Any, conference_id: uuid.UUID, email: str | None = None) -> int:
    """Links stop opening and their sessions end (cancellation, a person removed at re-booking)."""
    async with _connection(db) as conn, conn.transaction():
        return await _revoke(conn, conference_id, email)


@_translated
async def revoke_people_without_code(db: Any, conference_id: uuid.UUID) -> int:
    """After a re-booking: the links of people whose code was revoked (removed from the invitation)."""
    async with _connection(db) as conn, conn.transaction():
        gone = await conn.fetch(
            "SELECT DISTINCT l.email FROM conference_link l WHERE l.conference_id=$1 AND l.revoked_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM conference_code c WHERE c.conference_id=l.conference_id "
            "AND c.email=l.email AND c.revoked_at IS NULL)", conference_id)
        return sum([await _revoke(conn, conference_id, r["email"]) for r in gone])


@_translated
async def link_status(db: Any, conference_id: uuid.UUID, email: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
        "SELECT email, role, issued_at, revoked_at, last_opened_at FROM conference_link WHERE conference_id=$1 "
        "AND email=$2 ORDER BY revoked_at IS NULL DESC, issued_at DESC LIMIT 1", conference_id, email.lower())
    return dict(row) if row else None


def _link(row: Any) -> Link:
    data = dict(row)
    conf = _conf({k: data[k] for k in Conference.__dataclass_fields__})
    return Link(conf, data["link_email"], data["link_role"], data["link_revoked_at"], bytes(data["token_hash"]),
                data.get("csrf") or "")


@_translated
async def open_link(db: Any, token: str) -> Link | None:
    """The link of ``token`` (whatever its state; None: unknown). Marks it opened."""
    row = await db.fetchrow(
        f"""UPDATE conference_link l SET last_opened_at=now() FROM conference f
            WHERE l.token_hash=$1 AND f.id=l.conference_id
            RETURNING l.token_hash, l.email AS link_email, l.role AS link_role, l.revoked_at AS link_revoked_at,
                      {_C_COLUMNS}""", token_hash(token))
    return _link(row) if row else None


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii", "replace")).digest()


@_translated
async def start_session(db: Any, link_hash: bytes, session_id: str, csrf: str) -> None:
    await db.execute("INSERT INTO conference_space_session (id_hash, link_hash, csrf) VALUES ($1,$2,$3)",
                     session_hash(session_id), link_hash, csrf)


@_translated
async def session(db: Any, session_id: str) -> Link | None:
    """The person behind a session cookie (None: unknown or ended by a re-issue)."""
    row = await db.fetchrow(
        f"""SELECT l.token_hash, l.email AS link_email, l.role AS link_role, l.revoked_at AS link_revoked_at,
                   s.csrf, {_C_COLUMNS}
            FROM conference_space_session s JOIN conference_link l ON l.token_hash = s.link_hash
            JOIN conference f ON f.id = l.conference_id WHERE s.id_hash=$1""", session_hash(session_id))
    return _link(row) if row else None


@_translated
async def add_message(db: Any, conference_id: uuid.UUID, author: str, role: str, body: str) -> Message:
    row = await db.fetchrow("INSERT INTO conference_message (conference_id, author, role, body) VALUES ($1,$2,$3,$4) "
                            "RETURNING id, author, role, body, at", conference_id, author, role, body)
    return Message(**dict(row))


@_translated
async def messages(db: Any, conference_id: uuid.UUID, limit: int = 200) -> list[Message]:
    """The last ``limit`` messages, oldest first."""
    rows = await db.fetch("SELECT id, author, role, body, at FROM (SELECT * FROM conference_message "
                          "WHERE conference_id=$1 ORDER BY id DESC LIMIT $2) m ORDER BY id", conference_id, limit)
    return [Message(**dict(r)) for r in rows]


@_translated
async def add_document(db: Any, conference_id: uuid.UUID, uploaded_by: str, name: str, media_type: str,
                       content: bytes, max_count: int) -> Document:
    """Store a document; SpaceLimit when the conference already has ``max_count`` (checked under a lock
    on the conference row, so two uploads at once cannot both pass)."""
    async with _connection(db) as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM conference WHERE id=$1 FOR UPDATE", conference_id) is None:
            raise StoreError(f"no conference {conference_id}")
        count = await conn.fetchval("SELECT count(*) FROM conference_document WHERE conference_id=$1", conference_id)
        if count >= max_count:
            raise SpaceLimit(f"conference {conference_id} already has {count} documents (limit {max_count})")
        row = await conn.fetchrow(
            "INSERT INTO conference_document (id, conference_id, uploaded_by, name, media_type, size, sha256, content) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id, uploaded_by, name, media_type, size, uploaded_at",
            uuid.uuid4(), conference_id, uploaded_by, name, media_type, len(content),
            hashlib.sha256(content).hexdigest(), content)
    return Document(**dict(row))


@_translated
async def documents(db: Any, conference_id: uuid.UUID) -> list[Document]:
    rows = await db.fetch("SELECT id, uploaded_by, name, media_type, size, uploaded_at FROM conference_document "
                          "WHERE conference_id=$1 ORDER BY uploaded_at, id", conference_id)
    return [Document(**dict(r)) for r in rows]


@_translated
async def document(db: Any, conference_id: uuid.UUID, document_id: uuid.UUID) -> tuple[Document, bytes] | None:
    """A document of ``conference_id`` with its content (None: none such in that conference)."""
    row = await db.fetchrow("SELECT id, uploaded_by, name, media_type, size, uploaded_at, content "
                            "FROM conference_document WHERE conference_id=$1 AND id=$2", conference_id, document_id)
    if row is None:
        return None
    data = dict(row)
    content = bytes(data.pop("content"))
    return Document(**data), content
