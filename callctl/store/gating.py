"""Gating storage (SQL): emergency status, dialer profile, decision records, opposition list, report."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from callctl.countries import Country
from callctl.gating import Verdict
from callctl.gating.emergency import NOT_ACTIVATED, EmergencyStatus, endpoint_variables, realtime_set_var
from callctl.numbers import storable
from callctl.store.db import connection, translated

_translated = translated("gating store")
_connection = connection


@dataclass(frozen=True)
class Dialer:
    automated: bool
    sector: str | None


@dataclass(frozen=True)
class DialerFacts:
    """What the dialer rules need about one attempt, read under the (account, callee) lock."""

    sector: str | None
    list_version: int | None
    listed: bool
    exception: str | None  # 'customer' | 'consent' | None
    recent_calls: int  # allowed automated calls to this callee by this account in the cap window


@dataclass(frozen=True)
class DecisionRecord:
    account_id: uuid.UUID
    decided_at: dt.datetime
    caller: str
    callee: str
    verdict: Verdict
    emergency: bool
    automated: bool
    illegitimate: bool
    list_version: int | None


# -- accounts -----------------------------------------------------------------------------------


@_translated
async def account_country(db: Any, account_id: uuid.UUID) -> str | None:
    value = await db.fetchval("SELECT country FROM account WHERE id = $1", account_id)
    return None if value is None else str(value).strip()


@_translated
async def get_emergency(db: Any, account_id: uuid.UUID) -> EmergencyStatus | None:
    row = await db.fetchrow("SELECT enabled, location, verified_at FROM account_emergency WHERE account_id = $1",
                            account_id)
    return None if row is None else EmergencyStatus(row["enabled"], row["location"], row["verified_at"])


@_translated
async def set_emergency(db: Any, account_id: uuid.UUID, *, enabled: bool, location: str | None,
                        verified: bool, countries: Mapping[str, Country] | None = None) -> EmergencyStatus:
    """Enable (with a location, proved now if ``verified``) or disable. A changed location that is not
    re-verified loses its proof; disabling keeps the location on file. With ``countries`` (the country
    table), Asterisk's copy on the account's endpoints is rewritten in the same transaction."""
    async with _connection(db) as conn, conn.transaction():
        status = await _upsert_emergency(conn, account_id, enabled, location, verified)
        if countries is not None:
            await refresh_endpoint_vars(conn, countries, account_id)
    return status


async def _upsert_emergency(db: Any, account_id: uuid.UUID, enabled: bool, location: str | None,
                            verified: bool) -> EmergencyStatus:
    row = await db.fetchrow(
        """INSERT INTO account_emergency AS e (account_id, enabled, location, verified_at, updated_at)
           VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END, now())
           ON CONFLICT (account_id) DO UPDATE SET
               enabled = EXCLUDED.enabled,
               location = COALESCE(EXCLUDED.location, e.location),
               verified_at = CASE WHEN $4 THEN now()
                                  WHEN EXCLUDED.location IS NOT NULL AND EXCLUDED.location IS DISTINCT FROM e.location
                                      THEN NULL
                                  ELSE e.verified_at END,
               updated_at = now()
           RETURNING enabled, location, verified_at""",
        account_id, enabled, location, verified)
    return EmergencyStatus(row["enabled"], row["location"], row["verified_at"])


@_translated
async def get_dialer(db: Any, account_id: uuid.UUID) -> Dialer | None:
    row = await db.fetchrow("SELECT automated, sector FROM account_dialer WHERE account_id = $1", account_id)
    return None if row is None else Dialer(row["automated"], row["sector"])


@_translated
async def set_dialer(db: Any, account_id: uuid.UUID, *, automated: bool, sector: str | None) -> Dialer:
    row = await db.fetchrow(
        """INSERT INTO account_dialer (account_id, automated, sector, updated_at) VALUES ($1, $2, $3, now())
           ON CONFLICT (account_id) DO UPDATE SET automated = $2, sector = $3, updated_at = now()
           RETURNING automated, sector""", account_id, automated, sector)
    return Dialer(row["automated"], row["sector"])


# -- Asterisk's copy of the emergency status (ps_endpoints.set_var) ------------------------------


@_translated
async def refresh_endpoint_vars(db: Any, countries: Mapping[str, Country],
                                account_id: uuid.UUID | None = None) -> int:
    """Rewrite the emergency variables of the live users' PJSIP endpoints, of one account or of all.
    Returns how many endpoint rows changed.

    Per account, in one transaction that first locks the account row: two refreshes of the same
    account (a status change and a new number at the same moment) run one after the other, so the
    last one to commit has read the last status and numbers.
    """
    if account_id is None:
        ids = [r["id"] for r in await db.fetch("SELECT id FROM account ORDER BY id")]
    else:
        ids = [account_id]
    changed = 0
    async with _connection(db) as conn:
        for acc in ids:
            async with conn.transaction():
                country = await conn.fetchval("SELECT country FROM account WHERE id = $1 FOR UPDATE", acc)
                if country is None:
                    continue
                status_row = await conn.fetchrow(
                    "SELECT enabled, location, verified_at FROM account_emergency WHERE account_id = $1", acc)
                status = NOT_ACTIVATED if status_row is None else EmergencyStatus(
                    status_row["enabled"], status_row["location"], status_row["verified_at"])
                users = await conn.fetch(
                    """SELECT u.sip_username, (SELECT min(d.number) FROM did d WHERE d.user_id = u.id) AS callback
                       FROM sip_user u WHERE u.account_id = $1 AND u.removed_at IS NULL""", acc)
                for user in users:
                    value = realtime_set_var(endpoint_variables(str(acc), countries.get(str(country).strip()), status,
                                                                user["callback"]))
                    result = await conn.execute(
                        "UPDATE ps_endpoints SET set_var = $1 WHERE id = $2 AND set_var IS DISTINCT FROM $1",
                        value, user["sip_username"])
                    changed += int(result.rsplit(" ", 1)[-1])
    return changed


@_translated
async def import_asterisk_decisions(db: Any) -> list[tuple[str, str]]:
    """Copy the emergency calls Asterisk decided alone (engine down) into gating_decision, once each:
    the rows are marked imported in the same statement. Returns (decision, rule) per imported call."""
    rows = await db.fetch(
        """WITH moved AS (
               UPDATE asterisk_emergency_call SET imported_at = now()
               WHERE imported_at IS NULL AND decision IN ('allow', 'deny')
                 AND account_id ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
               RETURNING decided_at, account_id, caller, callee, decision, rule)
           INSERT INTO gating_decision (account_id, decided_at, caller, callee, decision, rule, reason, emergency,
                                        automated, illegitimate, list_version)
           SELECT account_id::uuid, decided_at, coalesce(caller, ''), coalesce(callee, ''), decision,
                  coalesce(rule, ''), 'decided by Asterisk while the engine was unavailable', true, false, false, NULL
           FROM moved
           RETURNING decision, rule""")
    return [(r["decision"], r["rule"]) for r in rows]


@dataclass(frozen=True)
class ChannelEvents:
    """One channel of an emergency call as Asterisk's channel events (cel) tell it; UTC."""

    uniqueid: str
    channel: str
    started_at: dt.datetime | None
    answered_at: dt.datetime | None
    ended_at: dt.datetime | None  # None: not ended (yet), or its end was not recorded


@dataclass(frozen=True)
class AsteriskEmergencyCall:
    """An emergency call Asterisk decided alone (asterisk_emergency_call) whose CDRs are not written yet,
    with the events of its channel and of the channels it dialled (cel linkedid = its uniqueid)."""

    id: int
    decided_at: dt.datetime
    account_id: str
    account_country: str | None
    endpoint: str | None
    caller: str
    callee: str
    decision: str
    rule: str
    uniqueid: str | None
    channels: tuple[ChannelEvents, ...]


_UUID_TEXT = "'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'"

# cel.eventtime is UTC without a zone; an hour's margin around the decision covers the clocks of
# Asterisk and PostgreSQL, and the day after it (asterisk_calls.GIVE_UP_AFTER) keeps the scan short.
_EMERGENCY_WITHOUT_CDR = f"""
SELECT a.id, a.decided_at, a.account_id, acc.country AS account_country, a.endpoint, coalesce(a.caller, '') AS caller,
       coalesce(a.callee, '') AS callee, a.decision, coalesce(a.rule, '') AS rule, a.uniqueid,
       c.uniqueid AS channel_uniqueid, c.channel, c.started_at, c.answered_at, c.ended_at
FROM asterisk_emergency_call a
LEFT JOIN account acc ON acc.id::text = a.account_id
LEFT JOIN LATERAL (
    SELECT e.uniqueid, min(e.channame) AS channel,
           min(e.eventtime) FILTER (WHERE e.eventtype = 'CHAN_START') AS started_at,
           min(e.eventtime) FILTER (WHERE e.eventtype = 'ANSWER') AS answered_at,
           max(e.eventtime) FILTER (WHERE e.eventtype = 'CHAN_END') AS ended_at
    FROM cel e
    WHERE a.uniqueid IS NOT NULL AND (e.uniqueid = a.uniqueid OR e.linkedid = a.uniqueid)
      AND e.eventtime >= (a.decided_at AT TIME ZONE 'UTC') - interval '1 hour'
      AND e.eventtime < (a.decided_at AT TIME ZONE 'UTC') + interval '1 day 1 hour'
    GROUP BY e.uniqueid) c ON true
WHERE a.cdr_at IS NULL AND a.decision IN ('allow', 'deny') AND a.account_id ~ {_UUID_TEXT}
ORDER BY a.id, c.started_at NULLS FIRST, c.uniqueid
LIMIT $1"""


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


@_translated
async def emergency_calls_without_cdr(db: Any, limit: int = 1000) -> list[AsteriskEmergencyCall]:
    """Emergency calls Asterisk decided alone whose CDRs were not handed to the writer yet, oldest first."""
    rows = await db.fetch(_EMERGENCY_WITHOUT_CDR, limit)
    calls: dict[int, AsteriskEmergencyCall] = {}
    channels: dict[int, list[ChannelEvents]] = {}
    for r in rows:
        if r["id"] not in calls:
            calls[r["id"]] = AsteriskEmergencyCall(
                r["id"], r["decided_at"], r["account_id"], (r["account_country"] or "").strip() or None,
                r["endpoint"], r["caller"], r["callee"], r["decision"], r["rule"], r["uniqueid"], ())
            channels[r["id"]] = []
        if r["channel_uniqueid"] is not None:
            channels[r["id"]].append(ChannelEvents(r["channel_uniqueid"], r["channel"] or "", _utc(r["started_at"]),
                                                   _utc(r["answered_at"]), _utc(r["ended_at"])))
    return [replace(c, channels=tuple(channels[i])) for i, c in calls.items()]


@_translated
async def emergency_cdrs_written(db: Any, ids: list[int]) -> None:
    """Mark these calls' CDRs as handed to the CDR writer (a later pass skips them)."""
    await db.execute("UPDATE asterisk_emergency_call SET cdr_at = now() WHERE id = ANY($1::bigint[]) "
                     "AND cdr_at IS NULL", ids)


# -- decisions ----------------------------------------------------------------------------------

_INSERT_DECISION = """INSERT INTO gating_decision (account_id, decided_at, caller, callee, decision, rule, reason,
                          emergency, automated, illegitimate, list_version)
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""


def _decision_args(rec: DecisionRecord) -> tuple[Any, ...]:
    # The numbers as received: whatever PostgreSQL cannot store (NUL, lone surrogates) must never make
    # a decision fail to be recorded (an emergency call above all).
    return (rec.account_id, rec.decided_at, storable(rec.caller), storable(rec.callee), rec.verdict.decision,
            rec.verdict.rule, storable(rec.verdict.reason, 1000), rec.emergency, rec.automated, rec.illegitimate,
            rec.list_version)


@_translated
async def record_decision(db: Any, rec: DecisionRecord) -> None:
    await db.execute(_INSERT_DECISION, *_decision_args(rec))


@_translated
async def decisions(db: Any, account_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM gating_decision WHERE account_id = $1 ORDER BY id", account_id)
    return [dict(r) for r in rows]


@_translated
async def dialer_attempt(db: Any, account_id: uuid.UUID, caller: str, callee: str, at: dt.datetime,
                         cap_window: dt.timedelta,
                         rules: Callable[[DialerFacts], Verdict]) -> tuple[Verdict, int | None, int]:
    """Apply ``rules`` to one automated attempt and record it, atomically per (account, callee).

    The transaction-scoped advisory lock serialises parallel dialers calling the same number from the
    same account: the count of recent allowed calls and the insert of this attempt happen under it, so
    a fifth call can never slip between another dialer's count and insert. Returns the verdict, the
    opposition list version consulted and the id of the decision record.
    """
    caller = storable(caller)  # the callee is an E.164 number (the gate normalised it)
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", f"{account_id}|{callee}")
        row = await conn.fetchrow(
            """SELECT (SELECT sector FROM account_dialer WHERE account_id = $1) AS sector,
                      c.version AS list_version,
                      EXISTS (SELECT 1 FROM optout_number o WHERE o.version = c.version AND o.number = $2) AS listed,
                      (SELECT kind FROM optout_exception x WHERE x.account_id = $1 AND x.number = $2) AS exception,
                      (SELECT count(*) FROM gating_decision d
                        WHERE d.account_id = $1 AND d.callee = $2 AND d.decision = 'allow' AND d.automated
                          AND d.decided_at > $3::timestamptz - $4::interval AND d.decided_at <= $3) AS recent
               FROM optout_current c""", account_id, callee, at, cap_window)
        facts = DialerFacts(sector=row["sector"], list_version=row["list_version"], listed=row["listed"],
                            exception=row["exception"], recent_calls=int(row["recent"]))
        verdict = rules(facts)
        record_id = await conn.fetchval(_INSERT_DECISION + " RETURNING id", account_id, at, caller, callee,
                                        verdict.decision, verdict.rule, verdict.reason, False, True,
                                        not verdict.allowed, facts.list_version)
    return verdict, facts.list_version, int(record_id)


@_translated
async def refuse_for_credit(db: Any, record_id: int, reason: str) -> None:
    """An allowed automated attempt the account's credit cannot pay for: its record becomes a refusal
    (rule ``credit``, not illegitimate: the dialer rules passed), so it no longer counts towards the
    callee's cap. Until then it counted, which can only refuse a parallel dialer, never let a 5th through."""
    await db.execute("UPDATE gating_decision SET decision = 'deny', rule = 'credit', reason = $2, illegitimate = false "
                     "WHERE id = $1 AND decision = 'allow'", record_id, reason)


@_translated
async def not_placed(db: Any, record_id: int, rule: str, reason: str) -> None:
    """An allowed automated attempt that was not placed after all (Asterisk refused the originate, or
    PostgreSQL failed on the way): its record becomes a refusal under ``rule``, not illegitimate, so it no
    longer counts towards the callee's cap (as refuse_for_credit does for credit)."""
    await db.execute("UPDATE gating_decision SET decision = 'deny', rule = $2, reason = $3, illegitimate = false "
                     "WHERE id = $1 AND decision = 'allow'", record_id, rule, reason)


# -- opposition list ----------------------------------------------------------------------------


@_translated
async def optout_version(db: Any) -> int | None:
    value = await db.fetchval("SELECT version FROM optout_current")
    return None if value is None else int(value)


@_translated
async def optout_lookup(db: Any, number: str) -> tuple[int | None, bool]:
    """(live list version, listed): one primary-key probe in the live partition."""
    row = await db.fetchrow(
        """SELECT c.version, EXISTS (SELECT 1 FROM optout_number o WHERE o.version = c.version AND o.number = $1)
           FROM optout_current c""", number)
    return (None if row[0] is None else int(row[0])), bool(row[1])


@_translated
async def begin_optout_version(db: Any, source: str) -> int:
    """A new, not yet live, list version with its empty staging table."""
    async with _connection(db) as conn, conn.transaction():
        version = int(await conn.fetchval("INSERT INTO optout_list (source) VALUES ($1) RETURNING version", source))
        await conn.execute(f"CREATE UNLOGGED TABLE optout_staging_v{version} (number text NOT NULL)")
    return version


@_translated
async def load_optout_batch(db: Any, version: int, numbers: Iterable[str]) -> None:
    async with _connection(db) as conn:
        await conn.copy_records_to_table(f"optout_staging_v{int(version)}", records=[(n,) for n in numbers],
                                         columns=["number"])


@_translated
async def activate_optout_version(db: Any, version: int, rejected: int) -> int:
    """Build the version's partition off-line, then attach it and switch the pointer in one transaction.
    Lookups keep seeing the previous version until that commit. Returns the distinct numbers loaded."""
    v = int(version)
    async with _connection(db) as conn:
        await conn.execute(f"""
            CREATE TABLE optout_number_v{v} (version bigint NOT NULL CHECK (version = {v}), number text NOT NULL);
            INSERT INTO optout_number_v{v} SELECT DISTINCT {v}, number FROM optout_staging_v{v};
            ALTER TABLE optout_number_v{v} ADD PRIMARY KEY (version, number);
            DROP TABLE optout_staging_v{v};""")
        count = int(await conn.fetchval(f"SELECT count(*) FROM optout_number_v{v}"))
        async with conn.transaction():
            await conn.execute(f"ALTER TABLE optout_number ATTACH PARTITION optout_number_v{v} FOR VALUES IN ({v})")
            # An older import finishing late never replaces a newer live list.
            await conn.execute("UPDATE optout_current SET version = $1 WHERE version IS NULL OR version < $1", v)
            await conn.execute("UPDATE optout_list SET activated_at = now(), numbers = $2, rejected = $3 "
                               "WHERE version = $1", v, count, rejected)
        live = await conn.fetchval("SELECT version FROM optout_current")
        old = await conn.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'optout_number'::regclass AND c.relname <> $1""", f"optout_number_v{live}")
        for row in old:
            await conn.execute(f'DROP TABLE IF EXISTS "{row["relname"]}"')
    return count


@_translated
async def abandon_optout_version(db: Any, version: int) -> None:
    await db.execute(f"DROP TABLE IF EXISTS optout_staging_v{int(version)}")


@_translated
async def add_exceptions(db: Any, account_id: uuid.UUID, numbers: Iterable[str], kind: str) -> int:
    rows = [(account_id, n, kind) for n in numbers]
    async with _connection(db) as conn:
        await conn.executemany(
            """INSERT INTO optout_exception (account_id, number, kind) VALUES ($1, $2, $3)
               ON CONFLICT (account_id, number) DO UPDATE SET kind = EXCLUDED.kind, recorded_at = now()""", rows)
    return len(rows)


# -- report -------------------------------------------------------------------------------------


@_translated
async def compliance_figures(db: Any, account_id: uuid.UUID, lo: dt.datetime, hi: dt.datetime,
                             short_call_s: int) -> dict[str, Any]:
    row = await db.fetchrow(
        """SELECT count(*) AS decisions,
                  count(*) FILTER (WHERE decision = 'allow') AS allowed,
                  count(*) FILTER (WHERE decision = 'deny') AS denied,
                  count(*) FILTER (WHERE illegitimate) AS illegitimate
           FROM gating_decision WHERE account_id = $1 AND decided_at >= $2 AND decided_at < $3""",
        account_id, lo, hi)
    rules = await db.fetch(
        """SELECT rule, count(*) AS n FROM gating_decision
           WHERE account_id = $1 AND decided_at >= $2 AND decided_at < $3 AND decision = 'deny'
           GROUP BY rule ORDER BY rule""", account_id, lo, hi)
    # Outbound legs: dialled legs and the calls the engine originated (marked extra.originated too).
    cdr = await db.fetchrow(
        """SELECT count(*) AS calls, count(*) FILTER (WHERE billed_s < $4) AS short
           FROM cdr WHERE account_id = $1 AND started_at >= $2 AND started_at < $3
                      AND (direction = 'outbound' OR extra @> '{"originated": true}')""",
        str(account_id), lo, hi, short_call_s)
    return {"decisions": int(row["decisions"]), "allowed": int(row["allowed"]), "denied": int(row["denied"]),
            "illegitimate": int(row["illegitimate"]), "denied_by_rule": {r["rule"]: int(r["n"]) for r in rules},
            "outbound_calls": int(cdr["calls"]), "short_calls": int(cdr["short"])}
