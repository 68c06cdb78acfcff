"""Conference bookings, access codes, rejected attempts and the participant timeline (SQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from callctl.conference.codes import Window, new_code
from callctl.errors import StoreError
from callctl.store.db import connection, translated

_translated = translated("conference store")
_connection = connection


CODE_LOCK = 0x63616C6C  # advisory lock serialising code issuance ("call")


@dataclass(frozen=True)
class Conference:
    id: uuid.UUID
    subject: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    organizer_email: str
    access_numbers: tuple[str, ...]
    language: str
    max_members: int
    organizer_leave_policy: str
    organizer_leave_grace_s: int
    lead_s: int
    grace_s: int
    ics_uid: str | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    cancelled_at: dt.datetime | None

    @property
    def window(self) -> Window:
        return Window(self.starts_at, self.ends_at, dt.timedelta(seconds=self.lead_s),
                      dt.timedelta(seconds=self.grace_s))

    @property
    def status(self) -> str:
        return "cancelled" if self.cancelled_at else ("ended" if self.ended_at else "booked")

    def admission(self, now: dt.datetime) -> str:
        if self.cancelled_at is not None or self.ended_at is not None:
            return "over"
        return self.window.admission(now)


@dataclass(frozen=True)
class Code:
    code: str
    email: str
    role: str


@dataclass(frozen=True)
class CodeMatch:
    conference: Conference
    email: str
    role: str


def _conf(row: Any) -> Conference:
    data = dict(row)
    data["access_numbers"] = tuple(data["access_numbers"])
    return Conference(**{k: data[k] for k in Conference.__dataclass_fields__})


_COLUMNS = ", ".join(Conference.__dataclass_fields__)
_F_COLUMNS = ", ".join("f." + k for k in Conference.__dataclass_fields__)


@_translated
async def save_booking(db: Any, *, subject: str, starts_at: dt.datetime, ends_at: dt.datetime, organizer: str,
                       participants: list[str], access_numbers: list[str], language: str = "en",
                       ics_uid: str | None = None, code_length: int = 8, max_members: int = 50,
                       organizer_leave_policy: str = "end",
                       organizer_leave_grace_s: int = 60) -> tuple[Conference, list[Code], bool]:
    """Create a conference (or update the one booked with the same ``ics_uid``).

    Returns the conference, the live codes of every person, and whether it was created. On update,
    people who stay keep their codes; removed people's codes are revoked; new people get codes.
    """
    people = {organizer.lower(): "organizer"}
    for email in participants:
        people.setdefault(email.lower(), "participant")
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CODE_LOCK)
        existing = None
        if ics_uid is not None:
            existing = await conn.fetchrow(f"SELECT {_COLUMNS} FROM conference WHERE ics_uid = $1 FOR UPDATE", ics_uid)
        if existing is None:
            conf_id = uuid.uuid4()
            row = await conn.fetchrow(
                f"""INSERT INTO conference (id, subject, starts_at, ends_at, organizer_email, ics_uid, access_numbers,
                       language, max_members, organizer_leave_policy, organizer_leave_grace_s)
                    VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) RETURNING {_COLUMNS}""",
                conf_id, subject, starts_at, ends_at, organizer.lower(), ics_uid, access_numbers, language,
                max_members, organizer_leave_policy, organizer_leave_grace_s)
            created = True
        else:
            row = await conn.fetchrow(
                f"""UPDATE conference SET subject=$2, starts_at=$3, ends_at=$4, organizer_email=$5, access_numbers=$6,
                       cancelled_at=NULL, updated_at=now() WHERE id=$1 RETURNING {_COLUMNS}""",
                existing["id"], subject, starts_at, ends_at, organizer.lower(), access_numbers)
            created = False
        conf = _conf(row)
        live = {r["email"]: r for r in await conn.fetch(
            "SELECT code, email, role FROM conference_code WHERE conference_id=$1 AND revoked_at IS NULL", conf.id)}
        for email, r in live.items():
            if people.get(email) != r["role"]:
                await conn.execute("UPDATE conference_code SET revoked_at=now() WHERE conference_id=$1 AND email=$2 "
                                   "AND revoked_at IS NULL", conf.id, email)
        taken = await _taken_codes(conn)
        codes: list[Code] = []
        for email, role in people.items():
            r = live.get(email)
            if r is not None and r["role"] == role:
                codes.append(Code(r["code"], email, role))
                continue
            code = new_code(taken, code_length)
            taken.add(code)
            await conn.execute("INSERT INTO conference_code (code, conference_id, email, role) VALUES ($1,$2,$3,$4)",
                               code, conf.id, email, role)
            codes.append(Code(code, email, role))
    return conf, codes, created


async def _taken_codes(conn: Any) -> set[str]:
    rows = await conn.fetch("SELECT code FROM conference_code WHERE revoked_at IS NULL")
    return {r["code"] for r in rows}


@_translated
async def reissue(db: Any, conference_id: uuid.UUID, email: str | None, code_length: int = 8) -> list[Code]:
    """New codes for one person (or everyone); the old ones stop working at once."""
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CODE_LOCK)
        rows = await conn.fetch(
            """UPDATE conference_code SET revoked_at=now()
               WHERE conference_id=$1 AND revoked_at IS NULL AND ($2::text IS NULL OR email=$2)
               RETURNING email, role""", conference_id, email.lower() if email else None)
        if not rows:
            raise StoreError(f"conference {conference_id}: no live code for {email or 'anyone'}")
        taken = await _taken_codes(conn)
        out = []
        for r in rows:
            code = new_code(taken, code_length)
            taken.add(code)
            await conn.execute("INSERT INTO conference_code (code, conference_id, email, role) VALUES ($1,$2,$3,$4)",
                               code, conference_id, r["email"], r["role"])
            out.append(Code(code, r["email"], r["role"]))
    return out


@_translated
async def get(conn: Any, conference_id: uuid.UUID) -> Conference | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM conference WHERE id=$1", conference_id)
    return _conf(row) if row else None


@_translated
async def list_all(conn: Any) -> list[Conference]:
    return [_conf(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM conference ORDER BY starts_at")]


@_translated
async def live_codes(conn: Any, conference_id: uuid.UUID) -> list[Code]:
    rows = await conn.fetch("SELECT code, email, role FROM conference_code WHERE conference_id=$1 "
                            "AND revoked_at IS NULL ORDER BY role DESC, email", conference_id)
    return [Code(r["code"], r["email"], r["role"]) for r in rows]


@_translated
async def cancel(conn: Any, conference_id: uuid.UUID) -> bool:
    res = await conn.execute("UPDATE conference SET cancelled_at=now(), updated_at=now() WHERE id=$1 "
                             "AND cancelled_at IS NULL", conference_id)
    return bool(res.endswith(" 1"))


@_translated
async def find_code(conn: Any, code: str, access_number: str, caller: str,
                    window_s: float) -> tuple[CodeMatch | None, int, int]:
    """The live code ``code`` valid on ``access_number`` (None: unknown, revoked or another number's),
    in one round trip with the lockout figures: when there is no match, the ``wrong_code`` attempt
    is recorded by the same statement, and the failures in the last ``window_s`` seconds (by this
    caller, on this access number, that attempt included) come back with the answer. Recording and
    counting run under locks on the caller and the number (``conference_code_attempt``,
    migrations/0020): two wrong codes at the same instant, on any nodes, see each other."""
    row = await conn.fetchrow(
        f"""WITH m AS (
                SELECT c.email AS code_email, c.role AS code_role, {_F_COLUMNS}
                FROM conference_code c JOIN conference f ON f.id = c.conference_id
                WHERE c.code=$1 AND c.revoked_at IS NULL AND $2 = ANY(f.access_numbers))
            SELECT m.*, fails.by_caller, fails.by_number
            FROM conference_code_attempt($3, $2, $4, NOT EXISTS (SELECT 1 FROM m)) fails LEFT JOIN m ON true""",
        code, access_number, caller, float(window_s))
    match = CodeMatch(_conf(row), row["code_email"], row["code_role"]) if row["code_email"] is not None else None
    return match, int(row["by_caller"]), int(row["by_number"])


@_translated
async def mark_started(conn: Any, conference_id: uuid.UUID) -> None:
    await conn.execute("UPDATE conference SET started_at=coalesce(started_at, now()) WHERE id=$1", conference_id)


@_translated
async def mark_ended(conn: Any, conference_id: uuid.UUID) -> None:
    await conn.execute("UPDATE conference SET ended_at=coalesce(ended_at, now()) WHERE id=$1", conference_id)


@_translated
async def record_attempt(conn: Any, caller: str, access_number: str, reason: str,
                         conference_id: uuid.UUID | None = None) -> None:
    await conn.execute("INSERT INTO conference_attempt (caller, access_number, reason, conference_id) "
                       "VALUES ($1,$2,$3,$4)", caller, access_number, reason, conference_id)


@_translated
async def codes_near(conn: Any, now: dt.datetime, horizon_s: float) -> list[tuple[str, CodeMatch]]:
    """The live codes of conferences whose admission window is open at ``now`` or opens within
    ``horizon_s`` (the engine's copy for a database outage: callctl.conference.offline)."""
    rows = await conn.fetch(
        f"""SELECT c.code, c.email AS code_email, c.role AS code_role, {_F_COLUMNS}
              FROM conference_code c JOIN conference f ON f.id = c.conference_id
             WHERE c.revoked_at IS NULL AND f.cancelled_at IS NULL AND f.ended_at IS NULL
               AND f.starts_at - make_interval(secs => f.lead_s) <= $1::timestamptz + make_interval(secs => $2)
               AND f.ends_at + make_interval(secs => f.grace_s) > $1::timestamptz""", now, float(horizon_s))
    return [(r["code"], CodeMatch(_conf(r), r["code_email"], r["code_role"])) for r in rows]


@_translated
async def record_attempts(conn: Any, rows: Sequence[tuple[str, str, str, uuid.UUID | None, dt.datetime]]) -> None:
    """Attempts (caller, access_number, reason, conference_id, at) kept in memory while PostgreSQL was
    unreachable, written with the time they happened."""
    if rows:
        await conn.executemany("INSERT INTO conference_attempt (caller, access_number, reason, conference_id, at) "
                               "VALUES ($1, $2, $3, $4, $5)", list(rows))


def _failures(caller: str, number: str, window_s: str) -> str:
    """SQL: failed code entries in the last ``window_s`` seconds, by ``caller`` and on ``number``
    (their statement parameters, e.g. "$1")."""
    return f"""SELECT count(*) FILTER (WHERE caller={caller}) AS by_caller,
                      count(*) FILTER (WHERE access_number={number}) AS by_number
               FROM conference_attempt WHERE at > now() - make_interval(secs => {window_s})
               AND (caller={caller} OR access_number={number}) AND reason IN ('wrong_code')"""


@_translated
async def recent_failures(conn: Any, caller: str, access_number: str, window_s: float) -> tuple[int, int]:
    """Failed code entries in the last ``window_s`` seconds: (by this caller, on this access number)."""
    row = await conn.fetchrow(_failures("$1", "$2", "$3"), caller, access_number, float(window_s))
    return int(row["by_caller"]), int(row["by_number"])


@_translated
async def record_events(conn: Any, rows: Sequence[tuple[uuid.UUID, str, str, str, dt.datetime, str | None,
                                                        uuid.UUID]]) -> None:
    """Timeline rows (conference_id, person, role, what, at, reason, leg_id) in one statement; rows of
    a conference deleted meanwhile (an erasure) are skipped rather than failing the others."""
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        """INSERT INTO conference_event (conference_id, person, role, what, at, reason, leg_id)
           SELECT u.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                  $7::uuid[]) AS u(conference_id, person, role, what, at, reason, leg_id)
           WHERE EXISTS (SELECT 1 FROM conference f WHERE f.id = u.conference_id)""", *map(list, columns))


@_translated
async def timeline(conn: Any, conference_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT person, role, what, at, reason, leg_id FROM conference_event "
                            "WHERE conference_id=$1 ORDER BY at, id", conference_id)
    return [dict(r) for r in rows]


# -- room ownership across nodes (issue 18, migrations/0021) --------------------------------------


@dataclass(frozen=True)
class Owner:
    """The node whose engine holds a conference's room, and until when its lease runs."""

    node: str
    expires_at: dt.datetime


@_translated
async def claim_room(conn: Any, conference_id: uuid.UUID, node: str, lease_s: float) -> Owner:
    """Take or renew the room's lease for ``node`` unless another node holds a live one; returns the
    owner after the statement (``node`` itself, or the other node). One statement: two nodes claiming
    at the same instant serialise on the row, and exactly one of them wins."""
    for _ in range(3):
        row = await conn.fetchrow(_CLAIM, conference_id, node, float(lease_s))
        # None: a node that claimed at the same instant committed after this statement's snapshot
        # began (ON CONFLICT saw its row, the SELECT could not): ask again, it is visible now.
        if row is not None:
            return Owner(row["node"], row["expires_at"])
    raise StoreError(f"conference {conference_id}: room ownership kept changing; try again")


_CLAIM = """WITH claimed AS (
               INSERT INTO conference_owner AS o (conference_id, node, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (conference_id) DO UPDATE
                   SET node = excluded.node, expires_at = excluded.expires_at,
                       taken_at = CASE WHEN o.node = excluded.node THEN o.taken_at ELSE now() END
                   WHERE o.node = excluded.node OR o.expires_at < now()
               RETURNING node, expires_at)
           SELECT node, expires_at FROM claimed
           UNION ALL
           SELECT node, expires_at FROM conference_owner
           WHERE conference_id = $1 AND NOT EXISTS (SELECT 1 FROM claimed)"""


@_translated
async def renew_rooms(conn: Any, conference_ids: Sequence[uuid.UUID], node: str, lease_s: float) -> set[uuid.UUID]:
    """Extend ``node``'s leases on these rooms; returns the ones it still holds (a lease another node
    took over after it expired is not taken back)."""
    if not conference_ids:
        return set()
    # An upsert: a room reopened here just after this node released the last one's lease gets it back.
    rows = await conn.fetch(
        """INSERT INTO conference_owner AS o (conference_id, node, expires_at)
           SELECT u, $2, now() + make_interval(secs => $3) FROM unnest($1::uuid[]) AS u
           WHERE EXISTS (SELECT 1 FROM conference f WHERE f.id = u)
           ON CONFLICT (conference_id) DO UPDATE SET expires_at = excluded.expires_at
               WHERE o.node = excluded.node
           RETURNING conference_id""",
        list(conference_ids), node, float(lease_s))
    return {r["conference_id"] for r in rows}


@_translated
async def release_room(conn: Any, conference_id: uuid.UUID, node: str) -> None:
    """``node``'s room has closed: the next member, on any node, opens the next one."""
    await conn.execute("DELETE FROM conference_owner WHERE conference_id = $1 AND node = $2", conference_id, node)


@_translated
async def room_owner(conn: Any, conference_id: uuid.UUID) -> Owner | None:
    row = await conn.fetchrow("SELECT node, expires_at FROM conference_owner WHERE conference_id = $1", conference_id)
    return Owner(row["node"], row["expires_at"]) if row else None
