"""Free-minutes pools (SQL): purchases, holds taken and extended under a row lock of the pool, holds
settled with the seconds used, and the queries behind `callctl minutes show` and the statement."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from callctl.errors import StoreError
from callctl.freeminutes import PaidLeg, grant
from callctl.store.db import connection, translated

_translated = translated("minutes")


@dataclass(frozen=True)
class Pool:
    account_id: uuid.UUID
    balance_s: int
    reserved_s: int

    @property
    def available_s(self) -> int:
        return self.balance_s - self.reserved_s


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    held_s: int


@dataclass(frozen=True)
class Usage:
    """What used a pool: one row per conference (settled legs), plus legs still in progress."""

    conference_id: uuid.UUID
    subject: str
    legs: int
    used_s: int
    open_legs: int
    held_s: int


@_translated
async def add(db: Any, account_id: uuid.UUID, seconds: int, note: str = "", *, price: Decimal | None = None,
              currency: str | None = None) -> Pool:
    """Add purchased seconds to the account's pool (created on first purchase); ``price`` in ``currency``
    (both or neither) is what they cost, kept on the purchase's ledger entry."""
    if seconds <= 0:
        raise StoreError(f"minutes for account {account_id}: the amount must be positive, got {seconds} s")
    if (price is None) != (currency is None):
        raise StoreError(f"minutes for account {account_id}: a price needs its currency and a currency its price")
    async with connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO minutes_pool (account_id, balance_s) VALUES ($1, $2) ON CONFLICT (account_id) DO UPDATE "
            "SET balance_s = minutes_pool.balance_s + EXCLUDED.balance_s, updated_at = now() "
            "RETURNING balance_s, reserved_s", account_id, seconds)
        await conn.execute("INSERT INTO minutes_ledger (account_id, kind, seconds, note, price, currency) "
                           "VALUES ($1, 'purchase', $2, $3, $4, $5)", account_id, seconds, note or None, price,
                           currency)
    return Pool(account_id, int(row["balance_s"]), int(row["reserved_s"]))


@_translated
async def pool(db: Any, account_id: uuid.UUID) -> Pool | None:
    row = await db.fetchrow("SELECT balance_s, reserved_s FROM minutes_pool WHERE account_id = $1", account_id)
    return None if row is None else Pool(account_id, int(row["balance_s"]), int(row["reserved_s"]))


@_translated
async def reserve(db: Any, account_id: uuid.UUID, wanted_s: int, minimum_s: int, *, conference_id: uuid.UUID,
                  leg_id: uuid.UUID, access_number: str, person: str) -> Hold | None:
    """Hold up to ``wanted_s`` seconds for a new leg; None (nothing held) if fewer than ``minimum_s`` are free.

    The pool row is locked FOR UPDATE, so concurrent holds on one pool are serialised and the sum of
    the holds never exceeds the balance (the table's CHECK is the last guard).
    """
    async with connection(db) as conn, conn.transaction():
        row = await conn.fetchrow("SELECT balance_s, reserved_s FROM minutes_pool WHERE account_id = $1 FOR UPDATE",
                                  account_id)
        seconds = grant(int(row["balance_s"]) - int(row["reserved_s"]), wanted_s, minimum_s) if row else 0
        if seconds <= 0:
            return None
        hold_id = uuid.uuid4()
        await conn.execute("UPDATE minutes_pool SET reserved_s = reserved_s + $2, updated_at = now() "
                           "WHERE account_id = $1", account_id, seconds)
        await conn.execute("INSERT INTO minutes_hold (id, account_id, conference_id, leg_id, access_number, person, "
                           "held_s) VALUES ($1, $2, $3, $4, $5, $6, $7)", hold_id, account_id, conference_id, leg_id,
                           access_number, person, seconds)
    return Hold(hold_id, seconds)


@_translated
async def extend(db: Any, hold_id: uuid.UUID, wanted_s: int) -> int:
    """Add up to ``wanted_s`` seconds to an open hold; returns the seconds added (0: the pool is used up)."""
    async with connection(db) as conn, conn.transaction():
        account_id = await conn.fetchval("SELECT account_id FROM minutes_hold WHERE id = $1 AND settled_at IS NULL",
                                         hold_id)
        if account_id is None:
            return 0
        row = await conn.fetchrow("SELECT balance_s, reserved_s FROM minutes_pool WHERE account_id = $1 FOR UPDATE",
                                  account_id)
        seconds = grant(int(row["balance_s"]) - int(row["reserved_s"]), wanted_s, 1)
        if seconds <= 0:
            return 0
        # Re-checked under the pool lock: a settle that won the race leaves the hold closed.
        status: str = await conn.execute("UPDATE minutes_hold SET held_s = held_s + $2 WHERE id = $1 "
                                         "AND settled_at IS NULL", hold_id, seconds)
        if not status.endswith(" 1"):
            return 0
        await conn.execute("UPDATE minutes_pool SET reserved_s = reserved_s + $2, updated_at = now() "
                           "WHERE account_id = $1", account_id, seconds)
    return seconds


@_translated
async def settle(db: Any, hold_id: uuid.UUID, used_s: int) -> int:
    """Debit the seconds a leg used (capped at its hold) and release the rest, atomically; returns the
    seconds debited. Idempotent: a settled hold returns its recorded seconds and changes nothing."""
    async with connection(db) as conn, conn.transaction():
        account_id = await conn.fetchval("SELECT account_id FROM minutes_hold WHERE id = $1", hold_id)
        if account_id is None:
            raise StoreError(f"minutes hold {hold_id} does not exist")
        # Pool first, then hold: the same lock order as extend, so the two never deadlock.
        await conn.execute("SELECT 1 FROM minutes_pool WHERE account_id = $1 FOR UPDATE", account_id)
        hold = await conn.fetchrow("SELECT conference_id, held_s, settled_at, used_s FROM minutes_hold "
                                   "WHERE id = $1 FOR UPDATE", hold_id)
        if hold["settled_at"] is not None:
            return int(hold["used_s"])
        used = max(0, min(used_s, int(hold["held_s"])))
        await conn.execute("UPDATE minutes_pool SET balance_s = balance_s - $2, reserved_s = reserved_s - $3, "
                           "updated_at = now() WHERE account_id = $1", account_id, used, hold["held_s"])
        await conn.execute("UPDATE minutes_hold SET settled_at = now(), used_s = $2 WHERE id = $1", hold_id, used)
        await conn.execute("INSERT INTO minutes_ledger (account_id, kind, seconds, hold_id, conference_id) "
                           "VALUES ($1, 'leg', $2, $3, $4)", account_id, -used, hold_id, hold["conference_id"])
    return used


@_translated
async def settle_expired(db: Any, grace_s: int) -> int:
    """Settle holds left open by an engine that died: those whose whole hold ended more than ``grace_s``
    ago (Asterisk cut those legs by then), at their full hold; returns how many were settled."""
    rows = await db.fetch("SELECT id, held_s FROM minutes_hold WHERE settled_at IS NULL "
                          "AND created_at + make_interval(secs => held_s + $1) < now()", grace_s)
    for r in rows:
        await settle(db, r["id"], int(r["held_s"]))
    return len(rows)


@_translated
async def usage(db: Any, account_id: uuid.UUID) -> list[Usage]:
    """Per conference: settled legs and seconds used, open legs and the seconds they hold."""
    rows = await db.fetch(
        "SELECT h.conference_id, coalesce(c.subject, '') AS subject, "
        "count(*) FILTER (WHERE h.settled_at IS NOT NULL) AS legs, "
        "coalesce(sum(h.used_s) FILTER (WHERE h.settled_at IS NOT NULL), 0) AS used_s, "
        "count(*) FILTER (WHERE h.settled_at IS NULL) AS open_legs, "
        "coalesce(sum(h.held_s) FILTER (WHERE h.settled_at IS NULL), 0) AS held_s "
        "FROM minutes_hold h LEFT JOIN conference c ON c.id = h.conference_id WHERE h.account_id = $1 "
        "GROUP BY h.conference_id, c.subject ORDER BY min(h.created_at)", account_id)
    return [Usage(r["conference_id"], r["subject"], int(r["legs"]), int(r["used_s"]), int(r["open_legs"]),
                  int(r["held_s"])) for r in rows]


@_translated
async def ledger(db: Any, account_id: uuid.UUID, start: dt.datetime | None = None,
                 end: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The pool's movements (purchases +, legs -) in [start, end), oldest first; a purchase's price and
    currency (None when it was recorded without)."""
    rows = await db.fetch(
        "SELECT at, kind, seconds, hold_id, conference_id, note, price, currency FROM minutes_ledger "
        "WHERE account_id = $1 "
        "AND ($2::timestamptz IS NULL OR at >= $2) AND ($3::timestamptz IS NULL OR at < $3) ORDER BY at, id",
        account_id, start, end)
    return [dict(r) for r in rows]


@_translated
async def paid_legs(db: Any, account_id: uuid.UUID, start: dt.datetime, end: dt.datetime) -> list[PaidLeg]:
    """Legs settled against the pool whose debit was booked in [start, end) (the ledger's month)."""
    rows = await db.fetch(
        "SELECT h.id AS hold_id, h.conference_id, coalesce(c.subject, '') AS subject, h.person, h.access_number, "
        "h.leg_id, h.created_at AS started_at, h.used_s FROM minutes_ledger l JOIN minutes_hold h ON h.id = l.hold_id "
        "LEFT JOIN conference c ON c.id = h.conference_id "
        "WHERE l.account_id = $1 AND l.kind = 'leg' AND l.at >= $2 AND l.at < $3 ORDER BY h.created_at, h.id",
        account_id, start, end)
    return [PaidLeg(r["hold_id"], r["conference_id"], r["subject"], r["person"], r["access_number"], r["leg_id"],
                    r["started_at"], int(r["used_s"])) for r in rows]


@_translated
async def paid_leg_ids(db: Any, leg_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these legs were organizer-paid (held on a pool)."""
    rows = await db.fetch("SELECT DISTINCT leg_id FROM minutes_hold WHERE leg_id = ANY($1::uuid[])", list(leg_ids))
    return {r["leg_id"] for r in rows}
