"""Billing SQL: rate decks, account terms, prepaid credit (reserve/settle under a row lock), the CDR
queries statements and fair use need, and CDR partition retention."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from callctl.billing.rating import Deck, Rate
from callctl.billing.statements import CdrLeg
from callctl.errors import StoreError
from callctl.store.db import connection, translated

_translated = translated("billing")
_connection = connection



@dataclass(frozen=True)
class AccountTerms:
    account_id: uuid.UUID
    country: str
    currency: str
    plan: str
    created_at: dt.datetime
    users: int
    numbers: int


@_translated
async def account_terms(db: Any, account_id: uuid.UUID) -> AccountTerms | None:
    """Country, currency, plan, creation time, live users and numbers of an account (None: unknown)."""
    row = await db.fetchrow(
        "SELECT a.country, a.currency, a.plan, a.created_at, "
        "(SELECT count(*) FROM sip_user u WHERE u.account_id = a.id AND u.removed_at IS NULL) AS users, "
        "(SELECT count(*) FROM did d JOIN sip_user u ON u.id = d.user_id WHERE u.account_id = a.id) AS numbers "
        "FROM account a WHERE a.id = $1", account_id)
    if row is None:
        return None
    return AccountTerms(account_id, row["country"].strip(), row["currency"].strip(), row["plan"],
                        row["created_at"], int(row["users"]), int(row["numbers"]))


# -- rate decks ------------------------------------------------------------------------------------
_RATE_COLUMNS = ("deck_id", "prefix", "destination", "zone", "rate_per_minute", "currency", "connect_fee",
                 "first_block_s", "increment_s", "per_call", "premium")


@_translated
async def import_deck(db: Any, name: str, effective_at: dt.datetime, source: str, rates: Sequence[Rate]) -> int:
    """Store a deck version and all its rows in one transaction (all or nothing); returns its id."""
    async with _connection(db) as conn, conn.transaction():
        deck_id = int(await conn.fetchval(
            "INSERT INTO rate_deck (name, effective_at, source, row_count) VALUES ($1, $2, $3, $4) RETURNING id",
            name, effective_at, source, len(rates)))
        await conn.copy_records_to_table(
            "rate", columns=list(_RATE_COLUMNS),
            records=[(deck_id, r.prefix, r.destination, r.zone, r.rate_per_minute, r.currency, r.connect_fee,
                      r.first_block_s, r.increment_s, r.per_call, r.premium) for r in rates])  # the flag as decided
    return deck_id


@_translated
async def load_decks(db: Any, start: dt.datetime, end: dt.datetime | None = None) -> list[Deck]:
    """The decks in force at some instant of [start, end] (end None: at ``start`` only), with their rows."""
    return [await deck_with_rates(db, d) for d in await deck_headers(db, start, end)]


@_translated
async def deck_headers(db: Any, start: dt.datetime, end: dt.datetime | None = None) -> list[Deck]:
    """The decks in force at some instant of [start, end], without their rows (one cheap query)."""
    end = start if end is None else end
    rows = await db.fetch(
        "SELECT id, name, effective_at FROM rate_deck WHERE id = (SELECT id FROM rate_deck WHERE effective_at <= $1 "
        "ORDER BY effective_at DESC, id DESC LIMIT 1) OR (effective_at > $1 AND effective_at <= $2) "
        "ORDER BY effective_at, id", start, end)
    return [Deck(d["name"], d["effective_at"], {}, d["id"]) for d in rows]


@_translated
async def deck_with_rates(db: Any, header: Deck) -> Deck:
    rates = await db.fetch(f"SELECT {', '.join(_RATE_COLUMNS[1:])} FROM rate WHERE deck_id = $1", header.deck_id)
    return Deck(header.name, header.effective_at, {r["prefix"]: _rate(r) for r in rates}, header.deck_id)


def _rate(row: Any) -> Rate:
    data = dict(row)
    data["premium_flag"] = data.pop("premium")
    return Rate(**data)


@_translated
async def deck_rows(db: Any, deck_id: int) -> int:
    return int(await db.fetchval("SELECT count(*) FROM rate WHERE deck_id = $1", deck_id))


@_translated
async def deck_count(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM rate_deck"))


# -- prepaid credit --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credit:
    account_id: uuid.UUID
    currency: str
    balance: Decimal
    reserved: Decimal

    @property
    def available(self) -> Decimal:
        return self.balance - self.reserved


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    account_id: uuid.UUID
    amount: Decimal
    max_seconds: int
    rate: dict[str, Any]
    settled_at: dt.datetime | None
    cost: Decimal | None
    kind: str = "credit"  # or "allowance": seconds of a user's included allowance, no money (migration 0025)


@_translated
async def add_credit(db: Any, account_id: uuid.UUID, currency: str, amount: Decimal, note: str = "") -> Credit:
    """Top up (amount > 0) and return the new state; refused if the balance is in another currency."""
    if amount <= 0:
        raise StoreError(f"credit for account {account_id}: the amount must be positive, got {amount}")
    if amount != amount.quantize(Decimal("0.0001")):  # the balance keeps 4 decimals: never round a payment
        raise StoreError(f"credit for account {account_id}: {amount} has more than the 4 decimals a balance keeps")
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO credit_balance (account_id, currency, balance) VALUES ($1, $2, $3) "
            "ON CONFLICT (account_id) DO UPDATE SET balance = credit_balance.balance + EXCLUDED.balance, "
            "updated_at = now() WHERE credit_balance.currency = EXCLUDED.currency "
            "RETURNING currency, balance, reserved", account_id, currency, amount)
        if row is None:
            raise StoreError(f"credit for account {account_id}: the balance is not in {currency}")
        await conn.execute("INSERT INTO credit_ledger (account_id, kind, amount, note) VALUES ($1, 'credit', $2, $3)",
                           account_id, amount, note or None)
    return Credit(account_id, row["currency"], row["balance"], row["reserved"])


@_translated
async def credit(db: Any, account_id: uuid.UUID) -> Credit | None:
    row = await db.fetchrow("SELECT currency, balance, reserved FROM credit_balance WHERE account_id = $1",
                            account_id)
    return None if row is None else Credit(account_id, row["currency"], row["balance"], row["reserved"])


@_translated
async def reserve(db: Any, account_id: uuid.UUID, amount: Decimal, *, max_seconds: int = 0,
                  rate: dict[str, Any] | None = None, channel_id: str | None = None,
                  asterisk_id: str | None = None) -> uuid.UUID | None:
    """Hold ``amount`` on the balance if what is available covers it; None otherwise (nothing held).
    ``channel_id``: the Asterisk channel of the call the hold pays for, on Asterisk ``asterisk_id``
    (the sweep's key).

    The balance row is locked FOR UPDATE, so two reservations on one balance are serialised: the
    second sees the first's hold and can never overdraw.
    """
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow("SELECT balance, reserved FROM credit_balance WHERE account_id = $1 FOR UPDATE",
                                  account_id)
        if row is None or row["balance"] - row["reserved"] < amount:
            return None
        rid = uuid.uuid4()
        await conn.execute("UPDATE credit_balance SET reserved = reserved + $2, updated_at = now() "
                           "WHERE account_id = $1", account_id, amount)
        await conn.execute("INSERT INTO credit_reservation (id, account_id, amount, max_seconds, rate, channel_id, "
                           "asterisk_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)", rid, account_id, amount,
                           max_seconds, json.dumps(rate or {}), channel_id, asterisk_id)
    return rid


@_translated
async def reservation(db: Any, reservation_id: uuid.UUID) -> Reservation | None:
    row = await db.fetchrow("SELECT id, account_id, amount, max_seconds, rate, settled_at, cost, kind "
                            "FROM credit_reservation WHERE id = $1", reservation_id)
    if row is None:
        return None
    data = dict(row)
    data["rate"] = json.loads(data["rate"]) if isinstance(data["rate"], str) else data["rate"]
    return Reservation(**data)


@_translated
async def settle(db: Any, reservation_id: uuid.UUID, true_cost: Decimal, billed_s: int) -> Decimal:
    """Release the hold and debit ``true_cost`` (capped at the amount held) atomically; returns the debit.

    Idempotent: settling an already settled reservation returns its recorded cost and changes nothing.
    """
    async with _connection(db) as conn, conn.transaction():
        res = await conn.fetchrow("SELECT account_id, amount, settled_at, cost, kind, max_seconds "
                                  "FROM credit_reservation WHERE id = $1 FOR UPDATE", reservation_id)
        if res is None:
            raise StoreError(f"credit reservation {reservation_id} does not exist")
        if res["settled_at"] is not None:
            return Decimal(res["cost"])
        if res["kind"] == "allowance":  # seconds of an allowance: no money moves, the seconds used are kept
            await conn.execute("UPDATE credit_reservation SET settled_at = now(), cost = 0, billed_s = $2 "
                               "WHERE id = $1", reservation_id, max(0, min(billed_s, int(res["max_seconds"]))))
            return Decimal(0)
        cost: Decimal = min(max(true_cost, Decimal(0)), Decimal(res["amount"]))
        await conn.execute("SELECT 1 FROM credit_balance WHERE account_id = $1 FOR UPDATE", res["account_id"])
        await conn.execute("UPDATE credit_balance SET balance = balance - $2, reserved = reserved - $3, "
                           "updated_at = now() WHERE account_id = $1", res["account_id"], cost, res["amount"])
        await conn.execute("UPDATE credit_reservation SET settled_at = now(), cost = $2, billed_s = $3 WHERE id = $1",
                           reservation_id, cost, billed_s)
        await conn.execute("INSERT INTO credit_ledger (account_id, kind, amount, reservation_id) "
                           "VALUES ($1, 'call', $2, $3)", res["account_id"], -cost, reservation_id)
    return cost


@dataclass(frozen=True)
class OpenHold:
    """A credit reservation not settled yet: the channel of its call and what it holds."""

    id: uuid.UUID
    channel_id: str | None
    max_seconds: int
    expired: bool  # its whole hold (and a ring margin) has passed: Asterisk has cut its call by now
    foreign: bool = False  # taken for a channel of another Asterisk than the one asked about


@_translated
async def open_holds_on_channel(db: Any, channel_id: str, asterisk_id: str | None) -> list[OpenHold]:
    """The holds not settled yet that were taken for the call on ``channel_id`` of Asterisk ``asterisk_id``
    (or of an unknown Asterisk), oldest first."""
    rows = await db.fetch("SELECT id, channel_id, max_seconds FROM credit_reservation WHERE settled_at IS NULL "
                          "AND channel_id = $1 AND (asterisk_id IS NULL OR $2::text IS NULL OR asterisk_id = $2) "
                          "ORDER BY created_at, id", channel_id, asterisk_id)
    return [OpenHold(r["id"], r["channel_id"], int(r["max_seconds"]), False) for r in rows]


@_translated
async def open_reservations(db: Any, margin_s: int, asterisk_id: str | None = None) -> list[OpenHold]:
    """Every reservation not settled yet, oldest first; ``foreign`` when taken on another Asterisk than
    ``asterisk_id`` (holds of unknown origin are not foreign)."""
    rows = await db.fetch("SELECT id, channel_id, max_seconds, "
                          "created_at + make_interval(secs => max_seconds + $1) < now() AS expired, "
                          "(asterisk_id IS NOT NULL AND $2::text IS NOT NULL AND asterisk_id <> $2) AS foreign_ "
                          "FROM credit_reservation WHERE settled_at IS NULL ORDER BY created_at, id",
                          margin_s, asterisk_id)
    return [OpenHold(r["id"], r["channel_id"], int(r["max_seconds"]), bool(r["expired"]), bool(r["foreign_"]))
            for r in rows]


# -- included allowances (trial plans: seconds per user) ------------------------------------------
# What a user used of the allowance since ``$3``: the seconds of its allowance holds (settled: what the call
# used; open: what the call in progress holds), plus the seconds of its CDRs rated as included that started
# before its first hold (calls made before holds existed, migration 0025; every later included call has a
# hold). A settled hold counts at once, before its CDR reaches the cdr table. Emergency legs (free and
# ``included`` too, but rated from no deck: no prefix) never use it up.
_ALLOWANCE_USED = """
WITH h AS (SELECT min(created_at) AS first_at,
                  COALESCE(sum(billed_s) FILTER (WHERE settled_at IS NOT NULL), 0)
                  + COALESCE(sum(max_seconds) FILTER (WHERE settled_at IS NULL), 0) AS held_s
             FROM credit_reservation WHERE kind = 'allowance' AND user_id = $4 AND created_at >= $3)
SELECT h.held_s + (SELECT COALESCE(sum(billed_s), 0) FROM cdr
                    WHERE account_id = $1 AND user_id = $2 AND started_at >= $3
                      AND started_at < COALESCE(h.first_at, 'infinity') AND direction = 'outbound' AND included
                      AND rating_prefix IS NOT NULL)
  FROM h
"""


@_translated
async def included_seconds_used(db: Any, account_id: uuid.UUID, user_id: uuid.UUID, since: dt.datetime) -> int:
    """Seconds of ``user_id``'s allowance used since ``since``, its calls in progress included (their holds)."""
    return int(await db.fetchval(_ALLOWANCE_USED, str(account_id), str(user_id), since, user_id))


@_translated
async def hold_allowance(db: Any, account_id: uuid.UUID, user_id: uuid.UUID, since: dt.datetime, allowance_s: int,
                         *, cap_s: int, min_seconds: int, rate: dict[str, Any], channel_id: str | None,
                         asterisk_id: str | None) -> tuple[uuid.UUID, int] | None:
    """Hold what is left of ``user_id``'s allowance of ``allowance_s`` seconds since ``since`` (at most
    ``cap_s``) for one call: (hold id, seconds held), or None when fewer than ``min_seconds`` are left.

    Serialised per user by a transaction advisory lock (the user's row may be on no node's cache, or
    gone): the count runs after the lock, with a fresh snapshot, so it sees the hold a parallel call on
    any node has just committed and two calls never get the same seconds.
    """
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('allowance|' || $1, 25))", str(user_id))
        used = int(await conn.fetchval(_ALLOWANCE_USED, str(account_id), str(user_id), since, user_id))
        seconds = min(cap_s, allowance_s - used)
        if seconds < max(1, min_seconds):
            return None
        rid = uuid.uuid4()
        await conn.execute("INSERT INTO credit_reservation (id, account_id, amount, max_seconds, rate, channel_id, "
                           "asterisk_id, kind, user_id) VALUES ($1, $2, 0, $3, $4::jsonb, $5, $6, 'allowance', $7)",
                           rid, account_id, seconds, json.dumps(rate), channel_id, asterisk_id, user_id)
    return rid, seconds


# -- CDRs for statements and fair use --------------------------------------------------------------


@_translated
async def outbound_legs(db: Any, account_id: uuid.UUID, start: dt.datetime, end: dt.datetime) -> list[CdrLeg]:
    """The account's answered outbound legs started in [start, end)."""
    # A pseudonymised number (privacy erase) is rated on the prefix kept in extra.rating_prefix.
    rows = await db.fetch(
        "SELECT leg_id, started_at, "
        "CASE WHEN from_number LIKE 'pseudo:%' THEN COALESCE(extra->'rating_prefix'->>'from', '') "
        "ELSE from_number END AS from_number, "
        "CASE WHEN to_number LIKE 'pseudo:%' THEN COALESCE(extra->'rating_prefix'->>'to', '') "
        "ELSE to_number END AS to_number, billed_s, user_id, rating_prefix, cost, included FROM cdr "
        "WHERE account_id = $1 AND started_at >= $2 AND started_at < $3 AND direction = 'outbound' "
        "AND billed_s > 0 ORDER BY started_at, leg_id", str(account_id), start, end)
    return [CdrLeg(**dict(r)) for r in rows]


@_translated
async def unlimited_monthly_usage(db: Any, since: dt.datetime, months: int) -> dict[str, Decimal]:
    """Average outbound seconds per month since ``since`` of every unlimited-plan account (0 if none)."""
    rows = await db.fetch(
        "SELECT a.id::text AS account_id, COALESCE(sum(c.billed_s), 0) AS seconds FROM account a "
        "LEFT JOIN cdr c ON c.account_id = a.id::text AND c.started_at >= $1 AND c.direction = 'outbound' "
        "WHERE a.plan = 'unlimited' GROUP BY a.id", since)
    return {r["account_id"]: Decimal(r["seconds"]) / months for r in rows}


# -- CDR retention ---------------------------------------------------------------------------------
@_translated
async def cdr_month_partitions(db: Any) -> list[tuple[str, dt.datetime]]:
    """Monthly partitions of cdr with the first instant of their month, oldest first."""
    rows = await db.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "WHERE i.inhparent = 'cdr'::regclass AND c.relname ~ '^cdr_[0-9]{4}m[0-9]{2}$' ORDER BY 1")
    return [(r["relname"], dt.datetime(int(r["relname"][4:8]), int(r["relname"][9:11]), 1, tzinfo=dt.UTC))
            for r in rows]


@_translated
async def drop_cdr_partitions(db: Any, names: Sequence[str], purge_default_before: dt.datetime) -> int:
    """Drop the named cdr partitions and delete DEFAULT-partition rows older than the cutoff, in one
    transaction; returns the rows deleted from DEFAULT."""
    async with _connection(db) as conn, conn.transaction():
        for name in names:
            await conn.execute(f'DROP TABLE "{name}"')
        status: str = await conn.execute("DELETE FROM cdr_default WHERE started_at < $1", purge_default_before)
    return int(status.rsplit(" ", 1)[-1])
