"""Free-minutes pools (pure): how many seconds a leg may hold, when a leg's meter extends, warns and
ends, and the organizer's statement of conference legs paid from the pool (issue 10)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

WHEN_EXHAUSTED = ("end", "move")
ASTERISK_GRACE_S = 2  # Asterisk's own cut-off comes this long after the engine's, as a backstop
MOVE_ANNOUNCE_S = 20  # "move": time given to the local-number message before Asterisk hangs up
MAX_POOL_MINUTES = 10_000_000


@dataclass(frozen=True)
class MeterTerms:
    """How one organizer-paid line draws its pool (numbers.yaml ``organizer_paid``)."""

    hold_s: int = 120
    min_leg_s: int = 60
    warn_before_s: int = 60
    when_exhausted: str = "end"

    @property
    def extend_when_left_s(self) -> int:
        """A leg asks for its next slice when this much of its hold is left (before the warning is due)."""
        return self.warn_before_s + max(1, self.hold_s // 4)


def grant(available_s: int, wanted_s: int, minimum_s: int) -> int:
    """Seconds to hold out of ``available_s``: at most ``wanted_s``, 0 if fewer than ``minimum_s`` are free."""
    if available_s < max(1, minimum_s):
        return 0
    return min(wanted_s, available_s)


def used_seconds(elapsed_s: float, held_s: int) -> int:
    """Seconds a leg draws: whole seconds rounded up (per second from the first), never above its hold."""
    if elapsed_s <= 0:
        return 0
    return min(held_s, math.ceil(round(elapsed_s, 3)))


def minutes_to_seconds(minutes: int) -> int:
    if not 0 < minutes <= MAX_POOL_MINUTES:
        raise ValueError(f"minutes must be a whole number from 1 to {MAX_POOL_MINUTES}, got {minutes}")
    return minutes * 60


def as_minutes(seconds: int) -> Decimal:
    """Seconds shown as minutes, 2 decimals, half up (61 s -> 1.02)."""
    return (Decimal(seconds) / 60).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def spoken_number(e164: str) -> str:
    """Digits to read out for a number (ARI ``digits:``): the E.164 digits without the +."""
    return "".join(ch for ch in e164 if ch.isdigit())


# -- the organizer's statement ----------------------------------------------------------------------
@dataclass(frozen=True)
class PaidLeg:
    """One settled leg: a hold on the pool and the seconds it used."""

    hold_id: uuid.UUID
    conference_id: uuid.UUID
    subject: str
    person: str
    access_number: str
    leg_id: uuid.UUID
    started_at: dt.datetime
    used_s: int


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
