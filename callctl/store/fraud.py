"""Fraud storage (SQL): permissions and their audit trail, velocity limits, admitted calls, suspensions,
warnings, refused attempts and SIP blocks. Admission runs under an advisory lock per account, so parallel
calls (and several engines on one database) are counted one after another."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from callctl.fraud import FraudError
from callctl.fraud.rules import DEFAULT_PERMISSIONS, SUSPENDED, Limits, Permissions, Refusal, Threshold, Usage
from callctl.store.db import connection, translated

_translated = translated("fraud store")
ACCOUNT_SCOPE = "account"
# An admitted call counts as in progress until its hold is settled or its CDR is written; one whose
# engine died without either stops counting after the longest call (4 h) and a margin.
OPEN_CALL_MAX = "4 hours 5 minutes"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _lock(conn: Any, account_id: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('callctl-fraud:' || $1::text, 0))",
                       str(account_id))


# -- accounts, permissions, limits -----------------------------------------------------------------


@dataclass(frozen=True)
class AccountFacts:
    country: str
    currency: str
    limits: dict[str, Any]
    contact_email: str | None


@_translated
async def account_facts(db: Any, account_id: uuid.UUID) -> AccountFacts | None:
    row = await db.fetchrow("SELECT a.country, a.currency, f.limits, f.contact_email FROM account a "
                            "LEFT JOIN fraud_account f ON f.account_id = a.id WHERE a.id = $1", account_id)
    if row is None:
        return None
    return AccountFacts(row["country"].strip(), row["currency"], _json(row["limits"]) or {}, row["contact_email"])


@_translated
async def permissions(db: Any, account_id: uuid.UUID, user_id: uuid.UUID | None = None) -> tuple[Permissions, str]:
    """The permissions in force for ``user_id`` (its own, else the account's, else the defaults) and their scope."""
    scopes = [str(user_id), ACCOUNT_SCOPE] if user_id is not None else [ACCOUNT_SCOPE]
    rows = await db.fetch("SELECT scope, permissions FROM fraud_permission WHERE account_id = $1 "
                          "AND scope = ANY($2::text[])", account_id, scopes)
    found = {r["scope"]: _json(r["permissions"]) for r in rows}
    for scope in scopes:
        if scope in found:
            return Permissions.from_json(found[scope]), scope
    return DEFAULT_PERMISSIONS, "default"


async def _audit(conn: Any, account_id: uuid.UUID | None, scope: str, what: str, by: str, before: Any,
                 after: Any) -> None:
    await conn.execute("INSERT INTO fraud_audit (account_id, scope, what, changed_by, before, after) "
                       "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)", account_id, scope, what, by,
                       json.dumps(before), json.dumps(after))


async def _account_exists(conn: Any, account_id: uuid.UUID) -> None:
    if await conn.fetchval("SELECT 1 FROM account WHERE id = $1 FOR SHARE", account_id) is None:
        raise FraudError(f"no account {account_id} (see: callctl account create)")


@_translated
async def set_permissions(db: Any, account_id: uuid.UUID, user_id: uuid.UUID | None, by: str,
                          change: Callable[[Permissions], Permissions]) -> tuple[Permissions, Permissions]:
    """Apply ``change`` to the permissions of the account (or of one user, starting from the account's),
    with an audit row; returns (before, after)."""
    scope = ACCOUNT_SCOPE if user_id is None else str(user_id)
    async with connection(db) as conn, conn.transaction():
        await _account_exists(conn, account_id)
        await _lock(conn, account_id)
        if user_id is not None and await conn.fetchval(
                "SELECT 1 FROM sip_user WHERE id = $1 AND account_id = $2", user_id, account_id) is None:
            raise FraudError(f"no user {user_id} in account {account_id} (see: callctl account show)")
        before, _ = await permissions(conn, account_id, user_id)
        after = change(before)
        await conn.execute(
            "INSERT INTO fraud_permission (account_id, scope, permissions) VALUES ($1, $2, $3::jsonb) "
            "ON CONFLICT (account_id, scope) DO UPDATE SET permissions = EXCLUDED.permissions, updated_at = now()",
            account_id, scope, json.dumps(after.to_json()))
        await _audit(conn, account_id, scope, "permissions", by, before.to_json(), after.to_json())
    return before, after


@_translated
async def set_limits(db: Any, account_id: uuid.UUID, by: str, base: Limits,
                     changes: dict[str, Any], contact_email: str | None = None) -> tuple[Limits, Limits]:
    """Store the limits given in ``changes`` (validated against ``base``, the settings' defaults) and the
    alert address; audited. Returns (before, after)."""
    async with connection(db) as conn, conn.transaction():
        await _account_exists(conn, account_id)
        await _lock(conn, account_id)
        row = await conn.fetchrow("SELECT limits, contact_email FROM fraud_account WHERE account_id = $1",
                                  str(account_id))
        stored = _json(row["limits"]) if row is not None else {}
        before = Limits.from_json(stored, base)
        after = before.changed(**changes)
        new_stored = {**stored, **{k: after.to_json()[k] for k, v in changes.items() if v is not None}}
        email = contact_email if contact_email is not None else (row["contact_email"] if row else None)
        await conn.execute(
            "INSERT INTO fraud_account (account_id, limits, contact_email) VALUES ($1, $2::jsonb, $3) "
            "ON CONFLICT (account_id) DO UPDATE SET limits = EXCLUDED.limits, contact_email = EXCLUDED.contact_email, "
            "updated_at = now()", account_id, json.dumps(new_stored), email or None)
        old_email = row["contact_email"] if row else None
        await _audit(conn, account_id, ACCOUNT_SCOPE, "limits", by, {**before.to_json(), "contact_email": old_email},
                     {**after.to_json(), "contact_email": email or None})
    return before, after


# -- admission ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """The outcome of one admission: ``refusal`` (None: admitted), ``suspended`` when this attempt
    suspended the account, and the warnings reached for the first time in their period."""

    refusal: Refusal | None
    suspended: bool
    new_warnings: list[Threshold]
    usage: Usage


async def _open_hold(conn: Any, account_id: uuid.UUID) -> Any:
    return await conn.fetchrow("SELECT id, rule, reason, held_at FROM fraud_hold WHERE account_id = $1 "
                               "AND released_at IS NULL", account_id)


async def _usage(conn: Any, account_id: uuid.UUID, own_reservation: uuid.UUID | None) -> Usage:
    since = await conn.fetchval("SELECT max(released_at) FROM fraud_hold WHERE account_id = $1", account_id)
    # Settled calls count at their cost when settled in the window; calls admitted and still up count at
    # what they can still spend in it: their hold, at most one hour of the call at its rate for the hour
    # window (a running call cannot spend more than that within any hour). See docs/security.md.
    money = await conn.fetchrow(
        f"""SELECT coalesce(sum(CASE WHEN settled_at IS NULL THEN hour_risk ELSE cost END)
                                FILTER (WHERE settled_at IS NULL
                                           OR settled_at >= greatest(now() - interval '1 hour', $2)), 0) AS hour,
                   coalesce(sum(CASE WHEN settled_at IS NULL THEN amount ELSE cost END), 0) AS day
             FROM (SELECT r.settled_at, coalesce(r.cost, 0) AS cost, r.amount,
                          CASE WHEN r.rate ? 'rate_per_minute'
                               THEN least(r.amount, coalesce((r.rate->>'connect_fee')::numeric, 0)
                                                    + (r.rate->>'rate_per_minute')::numeric * 60
                                                    + coalesce((r.rate->>'per_call')::numeric, 0))
                               ELSE r.amount END AS hour_risk
                     FROM credit_reservation r
                    WHERE r.account_id = $1 AND r.id IS DISTINCT FROM $3
                      AND ((r.settled_at IS NOT NULL
                            AND r.settled_at >= greatest(now() - interval '24 hours', $2))
                           OR (r.settled_at IS NULL AND r.created_at >= now() - interval '{OPEN_CALL_MAX}'
                               AND EXISTS (SELECT 1 FROM fraud_admission a WHERE a.reservation_id = r.id)))) s""",
        account_id, since, own_reservation)
    calls = await conn.fetchval("SELECT count(*) FROM fraud_admission WHERE account_id = $1 "
                                "AND admitted_at >= greatest(now() - interval '60 seconds', $2)", account_id, since)
    international = await conn.fetchval(
        f"""SELECT count(*) FROM fraud_admission a
             WHERE a.account_id = $1 AND a.international AND a.admitted_at >= now() - interval '{OPEN_CALL_MAX}'
               AND NOT EXISTS (SELECT 1 FROM credit_reservation r WHERE r.id = a.reservation_id
                                                                  AND r.settled_at IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM cdr c WHERE c.account_id = a.account_id::text
                                 AND c.started_at >= a.admitted_at - interval '1 hour'
                                 AND c.channel_id = a.channel_id)""", account_id)
    return Usage(Decimal(money["hour"]), Decimal(money["day"]), int(calls), int(international))


async def _hold(conn: Any, account_id: uuid.UUID, refusal: Refusal) -> bool:
    held = await conn.fetchval("INSERT INTO fraud_hold (account_id, rule, reason) VALUES ($1, $2, $3) "
                               "ON CONFLICT (account_id) WHERE released_at IS NULL DO NOTHING RETURNING id",
                               account_id, refusal.rule, refusal.reason)
    if held is not None:
        await _audit(conn, account_id, ACCOUNT_SCOPE, "suspension", "callctl", None,
                     {"rule": refusal.rule, "reason": refusal.reason})
    return held is not None


@_translated
async def admit(db: Any, account_id: uuid.UUID, *, user_id: uuid.UUID | None, channel_id: str,
                reservation_id: uuid.UUID | None, destination: str, international: bool, path: str,
                decide: Callable[[Usage, Decimal], tuple[Refusal | None, list[Threshold]]]) -> Admission:
    """Under the account's lock: refused while the account is suspended; else ``decide`` (the pure
    velocity rules) on the usage before this call and its own hold. A refusal suspends the account and is recorded; an
    admitted call is counted. Warnings are returned only the first time in their period."""
    async with connection(db) as conn, conn.transaction():
        await _lock(conn, account_id)
        hold = await _open_hold(conn, account_id)
        if hold is not None:
            held = Refusal(SUSPENDED, f"outbound calls of this account are suspended since "
                                      f"{hold['held_at'].isoformat(timespec='seconds')} ({hold['rule']}: "
                                      f"{hold['reason']}); an operator lifts it with `callctl fraud release`")
            await _refusal(conn, account_id, user_id, path, destination, held)
            return Admission(held, False, [], Usage())
        usage = await _usage(conn, account_id, reservation_id)
        # This call's own hold, as the hour window counts it (its warnings are judged with it).
        own = await conn.fetchval(
            "SELECT CASE WHEN rate ? 'rate_per_minute' THEN least(amount, coalesce((rate->>'connect_fee')::numeric, 0)"
            " + (rate->>'rate_per_minute')::numeric * 60 + coalesce((rate->>'per_call')::numeric, 0)) ELSE amount END "
            "FROM credit_reservation WHERE id = $1", reservation_id) if reservation_id is not None else None
        refusal, warnings = decide(usage, Decimal(own or 0))
        if refusal is not None:
            suspended = await _hold(conn, account_id, refusal)
            await _refusal(conn, account_id, user_id, path, destination, refusal)
            return Admission(refusal, suspended, [], usage)
        await conn.execute("INSERT INTO fraud_admission (account_id, user_id, channel_id, reservation_id, "
                           "destination, international) VALUES ($1, $2, $3, $4, $5, $6)",
                           account_id, user_id, channel_id, reservation_id, destination, international)
        fresh = []
        for warning in warnings:
            period = {"minute": "minute", "hour": "hour", "day": "day"}[warning.window]
            sent = await conn.fetchval(
                f"INSERT INTO fraud_alert (account_id, rule, period, level, reason) "
                f"VALUES ($1, $2, date_trunc('{period}', now()), 'warning', $3) ON CONFLICT DO NOTHING RETURNING 1",
                account_id, warning.rule, warning.reason)
            if sent:
                fresh.append(warning)
    return Admission(None, False, fresh, usage)


async def _refusal(conn: Any, account_id: uuid.UUID, user_id: uuid.UUID | None, path: str, destination: str,
                   refusal: Refusal) -> None:
    await conn.execute("INSERT INTO fraud_refusal (account_id, user_id, path, destination, rule, reason) "
                       "VALUES ($1, $2, $3, $4, $5, $6)", account_id, user_id, path, destination, refusal.rule,
                       refusal.reason)


@_translated
async def record_refusal(db: Any, account_id: uuid.UUID, user_id: uuid.UUID | None, path: str, destination: str,
                         refusal: Refusal) -> None:
    await _refusal(db, account_id, user_id, path, destination, refusal)


@_translated
async def refuse_gating_decision(db: Any, record_id: int, refusal: Refusal) -> None:
    """An automated attempt the dialer rules allowed and a fraud rule refused: its decision record becomes
    that refusal (not illegitimate: the dialer did nothing wrong), so it does not use up one of the callee's
    4 calls in 30 days (as a refusal for credit, callctl.store.gating.refuse_for_credit)."""
    await db.execute("UPDATE gating_decision SET decision = 'deny', rule = $2, reason = $3, illegitimate = false "
                     "WHERE id = $1 AND decision = 'allow'", record_id, refusal.rule, refusal.reason)


@_translated
async def suspension(db: Any, account_id: uuid.UUID) -> dict[str, Any] | None:
    row = await _open_hold(db, account_id)
    return None if row is None else {"rule": row["rule"], "reason": row["reason"],
                                     "held_at": row["held_at"].isoformat()}


@_translated
async def release(db: Any, account_id: uuid.UUID, by: str, note: str | None) -> dict[str, Any] | None:
    """Lift the account's suspension (audited); its counters start again from now. None: not suspended."""
    async with connection(db) as conn, conn.transaction():
        await _lock(conn, account_id)
        row = await conn.fetchrow("UPDATE fraud_hold SET released_at = now(), released_by = $2, note = $3 "
                                  "WHERE account_id = $1 AND released_at IS NULL "
                                  "RETURNING rule, reason, held_at, released_at", account_id, by, note)
        if row is None:
            return None
        before = {"rule": row["rule"], "reason": row["reason"], "held_at": row["held_at"].isoformat()}
        await _audit(conn, account_id, ACCOUNT_SCOPE, "release", by, before, {"released_at": row["released_at"]
                                                                             .isoformat(), "note": note})
    return {**before, "released_at": row["released_at"].isoformat(), "released_by": by, "note": note}


@_translated
async def overview(db: Any, account_id: uuid.UUID) -> dict[str, Any]:
    """What `callctl fraud show` prints besides the permissions and limits: usage, suspension, the
    latest refusals and audit rows."""
    async with connection(db) as conn:
        usage = await _usage(conn, account_id, None)
        refusals = await conn.fetch("SELECT at, path, destination, rule, reason FROM fraud_refusal "
                                    "WHERE account_id = $1 ORDER BY at DESC LIMIT 20", account_id)
        audit = await conn.fetch("SELECT changed_at, scope, what, changed_by, before, after FROM fraud_audit "
                                 "WHERE account_id = $1 ORDER BY changed_at DESC, id DESC LIMIT 20", account_id)
        scopes = await conn.fetch("SELECT scope, permissions FROM fraud_permission WHERE account_id = $1 "
                                  "AND scope <> $2 ORDER BY scope", account_id, ACCOUNT_SCOPE)
        hold = await _open_hold(conn, account_id)
    return {
        "usage": {"spent_hour": str(usage.spent_hour), "spent_day": str(usage.spent_day),
                  "calls_last_minute": usage.calls_last_minute,
                  "international_in_progress": usage.international_open},
        "suspended": None if hold is None else {"rule": hold["rule"], "reason": hold["reason"],
                                                "held_at": hold["held_at"].isoformat()},
        "user_permissions": {r["scope"]: _json(r["permissions"]) for r in scopes},
        "refusals": [{"at": r["at"].isoformat(), "path": r["path"], "destination": r["destination"],
                      "rule": r["rule"], "reason": r["reason"]} for r in refusals],
        "audit": [{"at": r["changed_at"].isoformat(), "scope": r["scope"], "what": r["what"], "by": r["changed_by"],
                   "before": _json(r["before"]), "after": _json(r["after"])} for r in audit],
    }


# -- encryption of SIP users ---------------------------------------------------------------------------

ENCRYPTION_MODES = {
    # mode: (media_encryption, media_encryption_optimistic, transport of requests sent to the phone)
    "off": ("no", "no", None),
    "offer": ("sdes", "yes", None),
    "require": ("sdes", "no", "transport-tls"),
}


@_translated
async def set_encryption(db: Any, user_id: uuid.UUID, mode: str, by: str) -> dict[str, Any]:
    """Set a live user's media encryption (``ENCRYPTION_MODES``) on its realtime endpoint; audited.
    Asterisk reads the row at the next request (no reload)."""
    if mode not in ENCRYPTION_MODES:
        raise FraudError(f"encryption mode '{mode}' is unknown (known: {', '.join(ENCRYPTION_MODES)})")
    media, optimistic, transport = ENCRYPTION_MODES[mode]
    async with connection(db) as conn, conn.transaction():
        user = await conn.fetchrow("SELECT account_id, sip_username FROM sip_user WHERE id = $1 AND removed_at IS NULL",
                                   user_id)
        if user is None:
            raise FraudError(f"no user {user_id} (unknown or removed)")
        before = await conn.fetchrow("SELECT media_encryption, media_encryption_optimistic, transport "
                                     "FROM ps_endpoints WHERE id = $1 FOR UPDATE", user["sip_username"])
        await conn.execute("UPDATE ps_endpoints SET media_encryption = $2, media_encryption_optimistic = $3, "
                           "transport = $4 WHERE id = $1", user["sip_username"], media, optimistic, transport)
        after = {"mode": mode, "media_encryption": media, "media_encryption_optimistic": optimistic,
                 "transport": transport}
        await _audit(conn, user["account_id"], str(user_id), "encryption", by,
                     dict(before) if before is not None else None, after)
    return {"user": str(user_id), "sip_username": user["sip_username"], **after}


@_translated
async def encryption_required(db: Any, user_id: uuid.UUID) -> bool:
    """Whether the user's endpoint is in mode ``require`` (SRTP mandatory, TLS expected)."""
    return bool(await db.fetchval(
        "SELECT e.media_encryption = 'sdes' AND e.media_encryption_optimistic = 'no' AND e.transport = 'transport-tls' "
        "FROM ps_endpoints e JOIN sip_user u ON u.sip_username = e.id WHERE u.id = $1", user_id))


# -- SIP blocks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    address: str
    failures: int
    reason: str
    blocked_at: dt.datetime
    until: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "failures": self.failures, "reason": self.reason,
                "blocked_at": self.blocked_at.isoformat(), "until": self.until.isoformat()}


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise FraudError(f"'{text}' is not an IP address (e.g. 203.0.113.7 or 2001:db8::7)") from None


def _block(row: Any) -> Block:
    return Block(str(row["address"]).split("/")[0], row["failures"], row["reason"], row["blocked_at"], row["until"])


@_translated
async def add_block(db: Any, address: str, failures: int, reason: str, base_s: float, max_s: float) -> Block:
    """Block ``address``: ``base_s``, doubled for each block of it in the last 24 hours, at most ``max_s``."""
    addr = _address(address)
    async with connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('callctl-block:' || $1, 0))", addr)
        current = await conn.fetchrow("SELECT * FROM fraud_block WHERE address = $1::inet AND lifted_at IS NULL "
                                      "AND until > now() ORDER BY until DESC LIMIT 1", addr)
        if current is not None:  # another engine blocked it a moment ago
            return _block(current)
        earlier = await conn.fetchval("SELECT count(*) FROM fraud_block WHERE address = $1::inet "
                                      "AND blocked_at > now() - interval '24 hours'", addr)
        seconds = min(max_s, base_s * 2 ** int(earlier))
        row = await conn.fetchrow("INSERT INTO fraud_block (address, failures, reason, until) "
                                  "VALUES ($1::inet, $2, $3, now() + $4 * interval '1 second') RETURNING *",
                                  addr, failures, reason, seconds)
    return _block(row)


@_translated
async def active_blocks(db: Any) -> list[Block]:
    rows = await db.fetch("SELECT DISTINCT ON (address) * FROM fraud_block WHERE lifted_at IS NULL AND until > now() "
                          "ORDER BY address, until DESC")
    return [_block(r) for r in rows]


@_translated
async def lift_block(db: Any, address: str, by: str, *, lifted_at_edge: Sequence[dict[str, Any]] = ()) -> int:
    """Lift every active block of ``address``; returns how many. Audited in one row with the bans of it already
    lifted at a cluster's Kamailio (``lifted_at_edge``, as callctl.fraud.kamailio.EdgeBan.to_json gives them)."""
    addr = _address(address)
    async with connection(db) as conn, conn.transaction():
        rows = await conn.fetch("UPDATE fraud_block SET lifted_at = now(), lifted_by = $2 WHERE address = $1::inet "
                                "AND lifted_at IS NULL AND until > now() RETURNING *", addr, by)
        lifted = [{**_block(r).to_json(), "where": "nodes"} for r in rows] + list(lifted_at_edge)
        if lifted:
            await _audit(conn, None, addr, "unblock", by, lifted, None)
    return len(rows)


__all__ = ["Admission", "Block", "account_facts", "active_blocks", "add_block", "admit", "encryption_required",
           "lift_block", "overview", "permissions", "record_refusal", "release", "set_encryption", "set_limits",
           "set_permissions", "suspension"]
