"""Per-second rating (pure): rate rows, longest-prefix match on E.164, billed seconds and the cost rule.

Cost = connect_fee + rate_per_minute x billed_seconds / 60 (+ per_call), in Decimal, rounded once per
call, half up, to 4 decimals. A call of 0 s (unanswered) costs nothing. See docs/billing.md.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

COST_QUANTUM = Decimal("0.0001")
STATEMENT_QUANTUM = Decimal("0.01")
ZERO = Decimal(0)
SIXTY = Decimal(60)
MAX_PREFIX_DIGITS = 15  # E.164 numbers have at most 15 digits


@dataclass(frozen=True, slots=True)
class Rate:
    """One deck row. ``prefix`` is digits only (no '+'), matched against the E.164 digits."""

    prefix: str
    destination: str
    zone: str
    rate_per_minute: Decimal
    currency: str
    connect_fee: Decimal = ZERO
    first_block_s: int = 1
    increment_s: int = 1
    per_call: Decimal = ZERO
    # The deck's premium flag (a premium-rate number: never included in a plan); None: not given, the
    # rows that are not billed per second are premium (a per-call charge or 60 s increments).
    premium_flag: bool | None = None

    @property
    def premium(self) -> bool:
        if self.premium_flag is not None:
            return self.premium_flag
        return premium_by_tariff(self.per_call, self.increment_s)


def premium_by_tariff(per_call: Decimal, increment_s: int) -> bool:
    """A row's premium flag when the deck does not give one: premium-rate numbers are not billed per second."""
    return per_call > 0 or increment_s >= 60


def billed_seconds(rate: Rate, seconds: int) -> int:
    """Seconds charged for a call of ``seconds``: the first block, then whole increments (0 s: 0)."""
    if seconds <= 0:
        return 0
    if seconds <= rate.first_block_s:
        return rate.first_block_s
    rest = seconds - rate.first_block_s
    return rate.first_block_s + -(-rest // rate.increment_s) * rate.increment_s


def round_cost(amount: Decimal) -> Decimal:
    return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def round_statement(amount: Decimal) -> Decimal:
    return amount.quantize(STATEMENT_QUANTUM, rounding=ROUND_HALF_UP)


def money_text(amount: Decimal, quantum: Decimal = COST_QUANTUM) -> str:
    """An amount as printed (JSON, CSV): at least the scale of ``quantum`` ("0.0000", never "0"), and
    never fewer digits than it has (no rounding on the way out)."""
    exponent, scale = amount.as_tuple().exponent, quantum.as_tuple().exponent
    if isinstance(exponent, int) and isinstance(scale, int) and exponent > scale:
        amount = amount.quantize(quantum)  # only adds zeros: the amount has fewer decimals than the scale
    return f"{amount:f}"


def cost_of_billed(rate: Rate, billed_s: int) -> Decimal:
    """The cost for ``billed_s`` already-billed seconds (0: nothing, not even the fees)."""
    if billed_s <= 0:
        return round_cost(ZERO)
    return round_cost(rate.connect_fee + rate.rate_per_minute * billed_s / SIXTY + rate.per_call)


def call_cost(rate: Rate, seconds: int) -> Decimal:
    """The cost of a call that lasted ``seconds`` (answer to end, already whole seconds)."""
    return cost_of_billed(rate, billed_seconds(rate, seconds))


def digits(e164: str) -> str:
    """'+33123456789' -> '33123456789'; refuses anything that is not E.164."""
    if not e164.startswith("+") or not e164[1:].isdigit() or not 1 <= len(e164) - 1 <= MAX_PREFIX_DIGITS:
        raise ValueError(f"not an E.164 number: {e164!r} (expected '+' then 1-15 digits)")
    return e164[1:]


@dataclass(frozen=True)
class Deck:
    """One imported deck version: ``name``, the instant it takes over, and its rows by prefix."""

    name: str
    effective_at: dt.datetime
    rates: Mapping[str, Rate] = field(repr=False)
    deck_id: int = 0

    def match(self, e164: str) -> Rate | None:
        """The row with the longest prefix of the number's digits, or None."""
        d = e164[1:]
        size = len(d)
        # digits(e164), inlined: this runs for every call rated (issue 17: >= 100,000 a second on one core)
        if e164[:1] != "+" or not d.isdigit() or not 1 <= size <= MAX_PREFIX_DIGITS:
            digits(e164)  # raises the one message for a number that is not E.164
        rates = self.rates
        for n in self._prefix_lengths:
            if n <= size:
                rate = rates.get(d[:n])
                if rate is not None:
                    return rate
        return None

    @functools.cached_property
    def _prefix_lengths(self) -> tuple[int, ...]:
        """The lengths of the deck's prefixes, longest first (a number is tried at those lengths only)."""
        return tuple(sorted({len(p) for p in self.rates}, reverse=True))


def effective_deck(decks: Iterable[Deck], at: dt.datetime) -> Deck | None:
    """The deck in force at ``at``: the latest ``effective_at`` not after ``at`` (ties: the latest import)."""
    best: Deck | None = None
    for deck in decks:
        if deck.effective_at <= at and (best is None or (deck.effective_at, deck.deck_id) >
                                        (best.effective_at, best.deck_id)):
            best = deck
    return best
