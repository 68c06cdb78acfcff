"""Rating a call under a plan, and monthly statements built from CDRs (pure).

Each call's cost is rounded once (4 decimals); a statement line sums its calls' costs and is shown
rounded to 2 decimals; the total excluding VAT is the sum of the shown lines, so lines add up.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from callctl.billing.plans import Basis, Plan, included_seconds_left, inclusion_basis, inclusion_text
from callctl.billing.rating import (
    ZERO,
    Deck,
    Rate,
    billed_seconds,
    cost_of_billed,
    effective_deck,
    money_text,
    round_cost,
    round_statement,
)

ZERO_COST = round_cost(ZERO)  # 0.0000: what a call that costs nothing costs


class Rating(NamedTuple):
    """How one call is rated. Immutable; a tuple, and its explanation put into words only when read
    (``why``): rating runs for every call and statement line, the words are read for one call in a
    dispute or by `callctl rate` (docs/benchmarks.md)."""

    deck: str | None
    prefix: str | None
    destination: str | None
    zone: str | None
    included: bool
    billed_seconds: int
    cost: Decimal
    currency: str | None
    explanation: str | None  # None: from ``basis`` when read
    rate_per_minute: Decimal | None = None
    included_s: int = 0  # seconds drawn from the plan's per-user allowance
    refused: str | None = None  # the call cannot be placed (nor charged) as rated: why
    plan: Plan | None = None
    rate: Rate | None = None  # the deck row matched
    # (inclusion basis, included seconds left when the call went beyond them, seconds charged)
    basis: tuple[Basis, int | None, int] | None = None

    @property
    def why(self) -> str:
        if self.explanation is not None or self.basis is None or self.plan is None or self.rate is None:
            return self.explanation or ""
        (inc, left_s, charged_s), rate, plan = self.basis, self.rate, self.plan
        why = inclusion_text(plan, rate, inc)
        if self.included:
            return why
        if inc[0] == "included":
            why += (f"; {left_s} s of the {plan.included_seconds_per_user} s per user left, "
                    f"{charged_s} s billed at the deck rate")
        return (why + f"; {rate.prefix} ({rate.destination}) at {rate.rate_per_minute} {rate.currency}/min, "
                f"first block {rate.first_block_s} s then {rate.increment_s} s"
                + (f", connect fee {rate.connect_fee}" if rate.connect_fee else "")
                + (f", per call {rate.per_call}" if rate.per_call else "")
                + f": {self.billed_seconds} s billed, cost {money_text(self.cost)}")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "deck": self.deck, "prefix": self.prefix, "destination": self.destination, "zone": self.zone,
            "included": self.included, "billed_seconds": self.billed_seconds, "cost": money_text(self.cost),
            "currency": self.currency, "rate_per_minute": None if self.rate_per_minute is None
            else str(self.rate_per_minute), "why": self.why}
        if self.refused is not None:
            out["refused"] = self.refused
            if self.refused not in self.why:
                out["why"] = f"refused: {self.refused}; {self.why}"
        return out


def currency_refusal(rate_currency: str, account_currency: str) -> str:
    return (f"destination rated in {rate_currency}, the account pays in {account_currency}: no rate applies")


def rate_call(decks: Iterable[Deck], plan: Plan, from_e164: str, to_e164: str, seconds: int, at: dt.datetime,
              *, included_used_s: int = 0, currency: str | None = None) -> Rating:
    """Rate one call: the deck in force at ``at``, the longest prefix, the plan's inclusion, the cost.

    ``included_used_s``: included seconds the user already used (plans with a per-user allowance);
    seconds beyond the allowance are billed at the deck rate.

    ``currency``: the account's. The one rule for a deck row in another currency (used by the engine's
    authorisation, `callctl rate` and statements alike): an included call is included at zero in the
    account's currency (the plan's price covers it, the row's currency plays no part); a call with
    seconds to bill at that row's rate is refused (``refused`` says why): nothing converts currencies.
    """
    deck = effective_deck(decks, at)
    if deck is None:
        return Rating(None, None, None, None, False, 0, ZERO_COST, None,
                      why := f"no rate deck in force at {at.isoformat()}: import one with `callctl rates import`",
                      refused=why)
    rate = deck.match(to_e164)
    if rate is None:
        return Rating(deck.name, None, None, None, False, 0, ZERO_COST, None,
                      why := f"no prefix of {to_e164} in deck {deck.name}: the destination is not rated (call refused)",
                      refused=why)
    inc = inclusion_basis(plan, rate, from_e164, to_e164)
    charged_s = seconds
    left: int | None = None
    if inc[0] == "included":
        left = included_seconds_left(plan, included_used_s)
        if left is None or seconds <= left:
            return Rating(deck.name, rate.prefix, rate.destination, rate.zone, True, 0, ZERO_COST,
                          currency or rate.currency, None, rate.rate_per_minute, seconds, None, plan, rate,
                          (inc, None, 0))
        charged_s = seconds - left
    billed = billed_seconds(rate, charged_s)
    cost = cost_of_billed(rate, billed)
    refused = None
    if currency is not None and rate.currency != currency:
        refused = currency_refusal(rate.currency, currency)
    return Rating(deck.name, rate.prefix, rate.destination, rate.zone, False, billed, cost, rate.currency, None,
                  rate.rate_per_minute, seconds - charged_s, refused, plan, rate, (inc, left, charged_s))


@dataclass(frozen=True)
class CdrLeg:
    """What a statement needs of a CDR row."""

    leg_id: uuid.UUID
    started_at: dt.datetime
    from_number: str
    to_number: str
    billed_s: int
    user_id: str | None
    # The rating the engine stored at call end (None: not rated then; the statement rates the numbers).
    rating_prefix: str | None = None
    cost: Decimal | None = None
    included: bool | None = None


def stored_rating(decks: Iterable[Deck], leg: CdrLeg, currency: str | None = None) -> Rating | None:
    """The leg's rating as charged at call end (destination and zone read from the deck then in force),
    or None when the engine did not rate it. A leg charged 0 with no prefix is a free call (emergency).
    An included leg is in the account's ``currency`` whatever its row's (rate_call's rule); a charged leg
    whose row is in another currency is ``refused`` (it needs attention: nothing converts currencies)."""
    if leg.cost is None:
        return None
    if leg.rating_prefix is None:
        return Rating(None, None, "Free calls (emergency)", "", True, 0, leg.cost, None, "free of charge",
                      included_s=0)
    deck = effective_deck(decks, leg.started_at)
    rate = deck.rates.get(leg.rating_prefix) if deck is not None else None
    if rate is None or deck is None:
        return None  # the deck row is gone: rate the numbers instead
    if leg.included:
        return Rating(deck.name, rate.prefix, rate.destination, rate.zone, True, 0, leg.cost, currency or rate.currency,
                      "as charged at the end of the call", rate.rate_per_minute, leg.billed_s)
    refused = currency_refusal(rate.currency, currency) if currency and rate.currency != currency else None
    return Rating(deck.name, rate.prefix, rate.destination, rate.zone, False, billed_seconds(rate, leg.billed_s),
                  leg.cost, rate.currency, "as charged at the end of the call", rate.rate_per_minute, 0, refused)


@dataclass(frozen=True)
class StatementLine:
    destination: str
    zone: str
    included: bool
    calls: int
    seconds: int
    billed_seconds: int
    amount: Decimal  # 2 decimals
    exact_amount: Decimal  # sum of the calls' 4-decimal costs
    leg_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class Statement:
    month: str
    currency: str
    lines: tuple[StatementLine, ...]
    total_excl_vat: Decimal
    vat_rate: Decimal
    vat: Decimal
    total: Decimal
    unrated: tuple[uuid.UUID, ...] = field(default=())
    # Calls left out of the lines because they need a person's attention (no rate, another currency):
    # the statement is still produced; `callctl bill` lists them and exits 1.
    attention: tuple[Attention, ...] = field(default=())


@dataclass(frozen=True)
class Attention:
    """One call a statement could not bill as it stands, and why."""

    leg_id: uuid.UUID
    started_at: dt.datetime
    destination: str | None
    reason: str


def build_statement(month: str, currency: str, legs: Sequence[CdrLeg], decks: Sequence[Deck], plan: Plan,
                    vat_rate: Decimal) -> Statement:
    """The statement of ``legs`` (one account, one month): lines by destination and inclusion. A leg that
    cannot be billed as it stands (no rate, a row in another currency) never stops the statement: it is
    left out of the lines and listed in ``attention``."""
    groups: dict[tuple[str, str, bool], list[tuple[CdrLeg, Rating]]] = {}
    used: dict[str | None, int] = {}
    unrated: list[uuid.UUID] = []
    attention: list[Attention] = []
    for leg in sorted(legs, key=lambda x: (x.started_at, str(x.leg_id))):
        if leg.billed_s <= 0:
            continue
        rating = stored_rating(decks, leg, currency) or rate_call(
            decks, plan, leg.from_number, leg.to_number, leg.billed_s, leg.started_at,
            included_used_s=used.get(leg.user_id, 0), currency=currency)
        if rating.destination is None:
            unrated.append(leg.leg_id)
            attention.append(Attention(leg.leg_id, leg.started_at, None, rating.why))
            continue
        if rating.refused is not None:
            attention.append(Attention(leg.leg_id, leg.started_at, rating.destination,
                                       f"{rating.refused} (charged {money_text(rating.cost)} {rating.currency})"))
            continue
        used[leg.user_id] = used.get(leg.user_id, 0) + rating.included_s
        groups.setdefault((rating.destination, rating.zone or "", rating.included), []).append((leg, rating))
    lines = []
    for (destination, zone, included), items in sorted(groups.items()):
        exact = sum((r.cost for _, r in items), ZERO)
        lines.append(StatementLine(destination, zone, included, len(items), sum(leg.billed_s for leg, _ in items),
                                   sum(r.billed_seconds for _, r in items), round_statement(exact), exact,
                                   tuple(leg.leg_id for leg, _ in items)))
    total_excl = sum((line.amount for line in lines), round_statement(ZERO))
    vat = round_statement(total_excl * vat_rate)
    return Statement(month, currency, tuple(lines), total_excl, vat_rate, vat, total_excl + vat, tuple(unrated),
                     tuple(attention))


def fair_use_flags(monthly_avg_s: dict[str, Decimal], factor: Decimal) -> dict[str, Decimal]:
    """Accounts whose average monthly usage is above ``factor`` x the average of all (account -> ratio)."""
    if not monthly_avg_s:
        return {}
    overall = sum(monthly_avg_s.values(), ZERO) / len(monthly_avg_s)
    if overall <= 0:
        return {}
    return {acct: avg / overall for acct, avg in monthly_avg_s.items() if avg > factor * overall}
