"""Personal data in PostgreSQL (SQL): census for the inventory, export, erasure, pseudonymisation
of CDRs, account suspensions and their purge, and the privacy audit trail."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from callctl.errors import StoreError
from callctl.privacy.rules import RATING_PREFIX_DIGITS, pseudonym
from callctl.store.db import connection as _connection
from callctl.store.db import translated

_translated = translated("privacy store")


@dataclass(frozen=True)
class Census:
    people: int | None
    records: int
    oldest: dt.datetime | None


@dataclass(frozen=True)
class Suspension:
    account_id: uuid.UUID
    suspended_at: dt.datetime
    resumed_at: dt.datetime | None
    purged_at: dt.datetime | None


class _Rollback(Exception):
    """Ends a dry run's transaction after every statement ran, so its counts are exact."""


# key (callctl.privacy.inventory) -> (people, records, oldest)
_CENSUS = {
    "conference_organizer": "SELECT count(DISTINCT lower(organizer_email)), count(*), min(created_at) FROM conference",
    "conference_code": "SELECT count(DISTINCT lower(email)), count(*), min(issued_at) FROM conference_code",
    "conference_event": "SELECT count(DISTINCT lower(person)), count(*), min(at) FROM conference_event",
    "conference_link": "SELECT count(DISTINCT lower(email)), count(*), min(issued_at) FROM conference_link",
    "conference_message": "SELECT count(DISTINCT lower(author)), count(*), min(at) FROM conference_message",
    "conference_document": "SELECT count(DISTINCT lower(uploaded_by)), count(*), min(uploaded_at) "
                           "FROM conference_document",
    "conference_attempt": "SELECT count(DISTINCT caller), count(*), min(at) FROM conference_attempt",
    "cdr_number": "SELECT (SELECT count(DISTINCT n) FROM (SELECT from_number AS n FROM cdr UNION "
                  "SELECT to_number FROM cdr) s WHERE n NOT LIKE 'pseudo:%'), count(*), min(started_at) FROM cdr",
    "cdr_person": "SELECT count(DISTINCT lower(person)) FILTER (WHERE person NOT LIKE 'pseudo:%'), count(*), "
                  "min(started_at) FROM cdr WHERE person IS NOT NULL",
    "account": "SELECT count(*), count(*), min(created_at) FROM account",
    "sip_user": "SELECT count(*), count(*), min(created_at) FROM sip_user",
    "did": "SELECT count(DISTINCT user_id), count(*), min(assigned_at) FROM did",
    "sip_credentials": "SELECT count(*), count(*), NULL::timestamptz FROM ps_auths",
    "sip_registration": "SELECT count(DISTINCT endpoint), count(*), NULL::timestamptz FROM ps_contacts",
    "credit": "SELECT count(DISTINCT account_id), count(*), min(at) FROM credit_ledger",
    "privacy_audit": "SELECT count(DISTINCT subject), count(*), min(at) FROM privacy_audit",
    "gating_decision": "SELECT count(DISTINCT callee), count(*), min(decided_at) FROM gating_decision",
    "optout_number": "SELECT count(*), count(*), min(l.activated_at) FROM optout_number n "
                     "JOIN optout_current c ON c.version = n.version JOIN optout_list l ON l.version = n.version",
    "optout_exception": "SELECT count(DISTINCT number), count(*), min(recorded_at) FROM optout_exception",
    "emergency_location": "SELECT count(*), count(*), min(verified_at) FROM account_emergency "
                          "WHERE location IS NOT NULL",
    "asterisk_emergency_call": "SELECT count(DISTINCT caller), count(*), min(decided_at) FROM asterisk_emergency_call",
    "asterisk_cel": "SELECT count(DISTINCT cid_num), count(*), min(eventtime) AT TIME ZONE 'UTC' FROM cel",
    "open_call": "SELECT count(DISTINCT entry->>'caller'), count(*), min(started_at) FROM open_call",
}
# Compliance rows younger than this keep the callee's number: the per-callee cap must still count them.
GATING_KEEP = "30 days"


def _count(status: str) -> int:
    """The row count of an asyncpg command status ("DELETE 3", "UPDATE 0")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _rows(records: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


@_translated
async def secret(db: Any) -> bytes:
    """This installation's pseudonymisation key, created on first use."""
    await db.execute("INSERT INTO privacy_secret (secret) VALUES ($1) ON CONFLICT (id) DO NOTHING",
                     secrets.token_bytes(32))
    value = await db.fetchval("SELECT secret FROM privacy_secret")
    return bytes(value)


@_translated
async def census(db: Any) -> dict[str, Census]:
    out = {}
    for key, sql in _CENSUS.items():
        people, records, oldest = await db.fetchrow(sql)
        out[key] = Census(people, records, oldest)
    return out


@_translated
async def collect(db: Any, *, email: str | None = None, number: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every database row about one person (an e-mail address or an E.164 number)."""
    value = email if email is not None else number
    if value is None:
        raise StoreError("privacy store: collect needs an e-mail address or a number")
    out: dict[str, list[dict[str, Any]]] = {}
    if email is not None:
        out["conferences_organised"] = _rows(await db.fetch(
            "SELECT id, subject, starts_at, ends_at, organizer_email, access_numbers, language, created_at, "
            "cancelled_at FROM conference WHERE lower(organizer_email) = lower($1) ORDER BY starts_at", email))
        out["conference_codes"] = _rows(await db.fetch(
            "SELECT c.conference_id, f.subject, f.starts_at, c.role, c.code, c.issued_at, c.revoked_at "
            "FROM conference_code c JOIN conference f ON f.id = c.conference_id "
            "WHERE lower(c.email) = lower($1) ORDER BY c.issued_at", email))
        out["conference_events"] = _rows(await db.fetch(
            "SELECT conference_id, role, what, at, reason FROM conference_event WHERE lower(person) = lower($1) "
            "ORDER BY at", email))
        out["conference_space_links"] = _rows(await db.fetch(
            "SELECT conference_id, role, issued_at, revoked_at, last_opened_at FROM conference_link "
            "WHERE lower(email) = lower($1) ORDER BY issued_at", email))
        out["conference_messages"] = _rows(await db.fetch(
            "SELECT conference_id, at, body FROM conference_message WHERE lower(author) = lower($1) ORDER BY id",
            email))
        out["conference_documents"] = _rows(await db.fetch(
            "SELECT conference_id, id, name, media_type, size, sha256, uploaded_at FROM conference_document "
            "WHERE lower(uploaded_by) = lower($1) ORDER BY uploaded_at", email))
    else:
        out["conference_attempts"] = _rows(await db.fetch(
            "SELECT at, access_number, reason, conference_id FROM conference_attempt WHERE caller = $1 ORDER BY at",
            number))
        out["line_users_forwarding_here"] = _rows(await db.fetch(
            "SELECT id AS user_id, account_id, created_at, removed_at FROM sip_user WHERE forward_to = $1", number))
        out["numbers_assigned"] = _rows(await db.fetch(
            "SELECT number, user_id, assigned_at FROM did WHERE number = $1", number))
        out["gating_decisions"] = _rows(await db.fetch(
            "SELECT account_id, decided_at, caller, callee, decision, rule, reason, emergency, automated "
            "FROM gating_decision WHERE caller = $1 OR callee = $1 ORDER BY decided_at", number))
        out["optout_exceptions"] = _rows(await db.fetch(
            "SELECT account_id, kind, recorded_at FROM optout_exception WHERE number = $1", number))
        out["asterisk_channel_events"] = _rows(await db.fetch(
            "SELECT eventtype, eventtime AT TIME ZONE 'UTC' AS at, channame, context, exten, cid_num FROM cel "
            "WHERE $1 IN (cid_num, cid_ani, cid_dnid, exten) ORDER BY eventtime", number))
    out["cdrs"] = _rows(await db.fetch(
        "SELECT leg_id, call_id, direction, from_number, to_number, started_at, answered_at, ended_at, billed_s, "
        "disposition, account_id, conference_id, person, role FROM cdr "
        "WHERE from_number = $1 OR to_number = $1 OR lower(person) = lower($1) OR strpos(extra::text, $1) > 0 "
        "ORDER BY started_at", value))
    return out


async def _pseudonymise_cdrs(conn: Any, value: str, pseudo: str, cutoff: dt.datetime,
                             account_id: str | None) -> tuple[int, int]:
    """Within retention, replace ``value`` by ``pseudo`` in every personal CDR field (keeping the
    numbers' rating prefixes in extra.rating_prefix); before it, delete the rows. (updated, deleted)"""
    match = ("($3::text IS NULL OR account_id = $3) AND (from_number = $1 OR to_number = $1 "
             "OR lower(person) = lower($1) OR strpos(extra::text, $1) > 0)")
    updated = await conn.execute(
        f"""UPDATE cdr SET
              extra = replace(extra::text, $1, $2)::jsonb || jsonb_build_object('rating_prefix', jsonb_build_object(
                  'from', coalesce(extra->'rating_prefix'->>'from',
                                   CASE WHEN from_number LIKE '+%' THEN left(from_number, $5) ELSE '' END),
                  'to', coalesce(extra->'rating_prefix'->>'to',
                                 CASE WHEN to_number LIKE '+%' THEN left(to_number, $5) ELSE '' END))),
              from_number = CASE WHEN from_number = $1 THEN $2 ELSE from_number END,
              to_number = CASE WHEN to_number = $1 THEN $2 ELSE to_number END,
              person = CASE WHEN lower(person) = lower($1) THEN $2 ELSE person END
            WHERE started_at >= $4 AND {match}""",
        value, pseudo, account_id, cutoff, 1 + RATING_PREFIX_DIGITS)
    deleted = await conn.execute(f"DELETE FROM cdr WHERE started_at < $4 AND {match} AND $2::text IS NOT NULL",
                                 value, pseudo, account_id, cutoff)
    return _count(updated), _count(deleted)


@_translated
async def erase_person(db: Any, *, email: str | None, number: str | None, key: bytes, cutoff: dt.datetime,
                       dry_run: bool) -> tuple[dict[str, int], list[str]]:
    """Delete one person's own data and pseudonymise their CDRs: counts per table (exact in a dry run)
    and the ids of the conferences deleted with their organizer."""
    value = email if email is not None else number
    if value is None:
        raise StoreError("privacy store: erase needs an e-mail address or a number")
    counts: dict[str, int] = {}
    organised: list[uuid.UUID] = []
    try:
        async with _connection(db) as conn, conn.transaction():
            if email is not None:
                organised = [r["id"] for r in await conn.fetch(
                    "SELECT id FROM conference WHERE lower(organizer_email) = lower($1)", email)]
                counts["conference_attempt"] = _count(await conn.execute(
                    "DELETE FROM conference_attempt WHERE conference_id = ANY($1::uuid[])", organised))
                counts["conference_event"] = _count(await conn.execute(
                    "DELETE FROM conference_event WHERE lower(person) = lower($1) OR conference_id = ANY($2::uuid[])",
                    email, organised))
                counts["conference_code"] = _count(await conn.execute(
                    "DELETE FROM conference_code WHERE lower(email) = lower($1) OR conference_id = ANY($2::uuid[])",
                    email, organised))
                # The Online Space (links and their sessions, messages, documents): the person's own, and
                # everything of the conferences they organised.
                for table, column in (("conference_link", "email"), ("conference_message", "author"),
                                      ("conference_document", "uploaded_by")):
                    counts[table] = _count(await conn.execute(
                        f"DELETE FROM {table} WHERE lower({column}) = lower($1) OR conference_id = ANY($2::uuid[])",
                        email, organised))
                counts["conference"] = _count(await conn.execute(
                    "DELETE FROM conference WHERE id = ANY($1::uuid[])", organised))
            else:
                counts["conference_attempt"] = _count(await conn.execute(
                    "DELETE FROM conference_attempt WHERE caller = $1", number))
                counts["conference_event"] = _count(await conn.execute(
                    "DELETE FROM conference_event WHERE person = $1", number))
                pseudo = pseudonym(key, value)
                counts["gating_decision_pseudonymised"] = _count(await conn.execute(
                    "UPDATE gating_decision SET caller = CASE WHEN caller = $1 THEN $2 ELSE caller END, "
                    "callee = CASE WHEN callee = $1 THEN $2 ELSE callee END "
                    f"WHERE (caller = $1 OR callee = $1) AND decided_at < now() - interval '{GATING_KEEP}'",
                    number, pseudo))
                counts["optout_exception"] = _count(await conn.execute(
                    "DELETE FROM optout_exception WHERE number = $1", number))
                counts["asterisk_emergency_call"] = _count(await conn.execute(
                    "DELETE FROM asterisk_emergency_call WHERE imported_at IS NOT NULL "
                    "AND (caller = $1 OR callee = $1)", number))
                counts["asterisk_cel"] = _count(await conn.execute(
                    "DELETE FROM cel WHERE $1 IN (cid_num, cid_ani, cid_dnid, exten)", number))
            updated, deleted = await _pseudonymise_cdrs(conn, value, pseudonym(key, value), cutoff, None)
            counts["cdr_pseudonymised"] = updated
            counts["cdr_deleted"] = deleted
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    return counts, [str(c) for c in organised]


@_translated
async def suspend(db: Any, account_id: uuid.UUID, at: dt.datetime) -> Suspension:
    """Suspend an account (an existing suspension keeps its date); a resumed one is suspended again."""
    async with _connection(db) as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM account WHERE id = $1", account_id) is None:
            raise StoreError(f"no account {account_id}: see `callctl account show ID`")
        row = await conn.fetchrow(
            """INSERT INTO account_suspension (account_id, suspended_at) VALUES ($1, $2)
               ON CONFLICT (account_id) DO UPDATE SET suspended_at = EXCLUDED.suspended_at, resumed_at = NULL
                   WHERE account_suspension.resumed_at IS NOT NULL AND account_suspension.purged_at IS NULL
               RETURNING *""", account_id, at)
        if row is None:
            row = await conn.fetchrow("SELECT * FROM account_suspension WHERE account_id = $1", account_id)
    return Suspension(**dict(row))


@_translated
async def resume(db: Any, account_id: uuid.UUID, at: dt.datetime) -> Suspension:
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM account_suspension WHERE account_id = $1 FOR UPDATE", account_id)
        if row is None or row["resumed_at"] is not None:
            raise StoreError(f"account {account_id} is not suspended")
        if row["purged_at"] is not None:
            raise StoreError(f"account {account_id} was purged on {row['purged_at']:%Y-%m-%d}: its data is gone")
        row = await conn.fetchrow("UPDATE account_suspension SET resumed_at = $2 WHERE account_id = $1 RETURNING *",
                                  account_id, at)
    return Suspension(**dict(row))


@_translated
async def suspended(db: Any) -> list[Suspension]:
    """Accounts suspended now (not resumed, not purged), oldest suspension first."""
    rows = await db.fetch("SELECT * FROM account_suspension WHERE resumed_at IS NULL AND purged_at IS NULL "
                          "ORDER BY suspended_at")
    return [Suspension(**dict(r)) for r in rows]


@_translated
async def purge_account(db: Any, account_id: uuid.UUID, *, key: bytes, cutoff: dt.datetime, at: dt.datetime,
                        dry_run: bool) -> dict[str, int]:
    """Delete a suspended account's users, SIP rows, numbers and credit; pseudonymise its name and
    its CDRs within retention (older ones are deleted). Counts per table (exact in a dry run)."""
    counts: dict[str, int] = {}
    acc = str(account_id)
    try:
        async with _connection(db) as conn, conn.transaction():
            users = await conn.fetch("SELECT id, sip_username FROM sip_user WHERE account_id = $1 FOR UPDATE",
                                     account_id)
            ids = [u["id"] for u in users]
            names = [u["sip_username"] for u in users]
            counts["did"] = _count(await conn.execute("DELETE FROM did WHERE user_id = ANY($1::uuid[])", ids))
            sip_rows = 0
            for table in ("ps_endpoints", "ps_auths", "ps_aors"):
                sip_rows += _count(await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::text[])", names))
            sip_rows += _count(await conn.execute(
                "DELETE FROM ps_contacts WHERE endpoint = ANY($1::text[]) OR id LIKE ANY($2::text[])",
                names, [n + ";@%" for n in names]))
            counts["ps_rows"] = sip_rows
            counts["sip_user"] = _count(await conn.execute("DELETE FROM sip_user WHERE account_id = $1", account_id))
            counts["gating"] = sum([
                _count(await conn.execute("DELETE FROM account_emergency WHERE account_id = $1", account_id)),
                _count(await conn.execute("DELETE FROM optout_exception WHERE account_id = $1", account_id)),
                _count(await conn.execute("DELETE FROM gating_decision WHERE account_id = $1", account_id)),
                _count(await conn.execute("DELETE FROM asterisk_emergency_call WHERE account_id = $1", acc))])
            counts["credit"] = sum([
                _count(await conn.execute("DELETE FROM credit_reservation WHERE account_id = $1", account_id)),
                _count(await conn.execute("DELETE FROM credit_balance WHERE account_id = $1", account_id)),
                _count(await conn.execute("DELETE FROM credit_ledger WHERE account_id = $1 AND at < $2",
                                          account_id, cutoff))])
            name = await conn.fetchval("SELECT name FROM account WHERE id = $1", account_id)
            if name is not None and not name.startswith("pseudo:"):
                await conn.execute("UPDATE account SET name = $2 WHERE id = $1", account_id, pseudonym(key, name))
            counts["account_pseudonymised"] = int(name is not None)
            values = {r["v"] for r in await conn.fetch(
                "SELECT from_number AS v FROM cdr WHERE account_id = $1 UNION SELECT to_number FROM cdr "
                "WHERE account_id = $1 UNION SELECT person FROM cdr WHERE account_id = $1 AND person IS NOT NULL",
                acc)}
            # A leg matches once per personal value it holds: count legs, not updates.
            updated = await conn.fetchval("SELECT count(*) FROM cdr WHERE account_id = $1 AND started_at >= $2",
                                          acc, cutoff)
            deleted = 0
            for value in sorted(v for v in values if v and not v.startswith("pseudo:")):
                deleted += (await _pseudonymise_cdrs(conn, value, pseudonym(key, value), cutoff, acc))[1]
            deleted += _count(await conn.execute("DELETE FROM cdr WHERE account_id = $1 AND started_at < $2",
                                                  acc, cutoff))
            counts["cdr_pseudonymised"] = updated
            counts["cdr_deleted"] = deleted
            await conn.execute("UPDATE account_suspension SET purged_at = $2 WHERE account_id = $1", account_id, at)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    return counts


@_translated
async def audit(db: Any, *, command: str, rule: str, subject: str, dry_run: bool, counts: dict[str, int],
                at: dt.datetime | None = None) -> None:
    """Append to the audit trail. ``subject`` must already be a pseudonym or an account id."""
    await db.execute("INSERT INTO privacy_audit (at, command, rule, subject, dry_run, counts) "
                     "VALUES (coalesce($1, now()), $2, $3, $4, $5, $6::jsonb)",
                     at, command, rule, subject, dry_run, json.dumps(counts, sort_keys=True))


@_translated
async def audit_trail(db: Any) -> list[dict[str, Any]]:
    return _rows(await db.fetch("SELECT at, command, rule, subject, dry_run, counts FROM privacy_audit ORDER BY id"))
