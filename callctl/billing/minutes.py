"""Free-minutes pools (pure): how many seconds a leg may hold, when a leg's meter extends, warns and
ends, and the organizer's statement of conference legs paid from the pool (issue 10)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

# The terms a leg is metered under are shared with conference legs: callctl.freeminutes.
from callctl.freeminutes import ASTERISK_GRACE_S as ASTERISK_GRACE_S
from callctl.freeminutes import MOVE_ANNOUNCE_S as MOVE_ANNOUNCE_S
from callctl.freeminutes import WHEN_EXHAUSTED as WHEN_EXHAUSTED
from callctl.freeminutes import MeterTerms as MeterTerms
from callctl.freeminutes import PaidLeg as PaidLeg
from callctl.freeminutes import grant as grant
from callctl.freeminutes import spoken_number as spoken_number
from callctl.freeminutes import used_seconds as used_seconds

MAX_POOL_MINUTES = 10_000_000


def minutes_to_seconds(minutes: int) -> int:
    if not 0 < minutes <= MAX_POOL_MINUTES:
        raise ValueError(f"minutes must be a whole number from 1 to {MAX_POOL_MINUTES}, got {minutes}")
    return minutes * 60


def as_minutes(seconds: int) -> Decimal:
    """Seconds shown as minutes, 2 decimals, half up (61 s -> 1.02)."""
    return (Decimal(seconds) / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# -- the organizer's statement ----------------------------------------------------------------------
@dataclass(frozen=True)
class ConferenceLine:
    conference_id: uuid.UUID
    subject: str
    legs: int
    seconds: int
    leg_ids: tuple[uuid.UUID, ...]

    @property
    def minutes(self) -> Decimal:
        return as_minutes(self.seconds)


@dataclass(frozen=True)
class Purchase:
    """Minutes bought for a pool, with what they cost (excl. VAT) when the purchase said so."""

    at: dt.datetime
    seconds: int
    price: Decimal | None = None
    currency: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PoolStatement:
    """Conference legs of one month paid from one account's pool, grouped by conference, and the
    minutes bought that month."""

    account_id: uuid.UUID
    month: str
    lines: tuple[ConferenceLine, ...]
    purchases: tuple[Purchase, ...]  # bought in the month, oldest first
    balance_s: int  # the pool's balance now

    @property
    def used_s(self) -> int:
        return sum(line.seconds for line in self.lines)

    @property
    def purchased_s(self) -> int:
        return sum(p.seconds for p in self.purchases)

    @property
    def paid(self) -> dict[str, Decimal]:
        """What the month's purchases cost, per currency (purchases without a price are not in it)."""
        return paid_by_currency(self.purchases)


def paid_by_currency(purchases: Sequence[Purchase]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for p in purchases:
        if p.price is not None and p.currency is not None:
            totals[p.currency] = totals.get(p.currency, Decimal(0)) + p.price
    return dict(sorted(totals.items()))


def pool_statement(account_id: uuid.UUID, month: str, legs: Sequence[PaidLeg], purchases: Sequence[Purchase],
                   balance_s: int) -> PoolStatement:
    """Lines by conference (in order of first use); a line's seconds are the sum of its legs' seconds,
    so the lines add up to what the pool's ledger debited for these legs."""
    groups: dict[uuid.UUID, list[PaidLeg]] = {}
    for leg in sorted(legs, key=lambda x: (x.started_at, str(x.hold_id))):
        groups.setdefault(leg.conference_id, []).append(leg)
    lines = tuple(ConferenceLine(cid, items[0].subject, len(items), sum(x.used_s for x in items),
                                 tuple(x.leg_id for x in items)) for cid, items in groups.items())
    return PoolStatement(account_id, month, lines, tuple(sorted(purchases, key=lambda p: p.at)), balance_s)
