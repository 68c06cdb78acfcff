"""Prepaid authorisation for outbound calls: before a call, the longest duration the account can pay
for, held on its balance; after it, the true cost debited. For the outbound call path to call."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from callctl.billing.plans import Plan, Plans, load_plans, trial_problem
from callctl.billing.prepaid import MAX_CALL_S, max_authorised_seconds, reservation_amount
from callctl.billing.rating import Deck, Rate, call_cost, money_text
from callctl.billing.statements import Rating, rate_call
from callctl.cdr.record import answered_seconds
from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.store import billing as store
from callctl.store import cel as cel_store

log = get_logger("callctl.billing")

# A hold whose channel is unknown (written before migration 0011) is settled only once its whole
# duration, ringing included, has surely passed: Asterisk has cut that call by then.
UNKNOWN_CHANNEL_MARGIN_S = 180

DeckLoader = Callable[[Any, dt.datetime], Awaitable[list[Deck]]]


class DeckCache:
    """Rate decks kept in memory by id: a deck's rows never change once imported (a new import is a
    new deck), so a call costs one small query for which decks are in force, not a 100,000-row read."""

    def __init__(self, keep: int = 4) -> None:
        self._decks: dict[int, Deck] = {}
        self._keep = keep

    async def __call__(self, pool: Any, at: dt.datetime) -> list[Deck]:
        out = []
        for header in await store.deck_headers(pool, at):
            deck = self._decks.get(header.deck_id)
            if deck is None:
                deck = await store.deck_with_rates(pool, header)
                self._decks[header.deck_id] = deck
                for old in sorted(self._decks)[:-self._keep]:
                    del self._decks[old]
            out.append(deck)
        return out


@dataclass(frozen=True)
class Authorization:
    """``max_seconds`` 0 means refused (``reason`` says why, for the caller's announcement)."""

    max_seconds: int
    reservation_id: uuid.UUID | None
    rating: Rating | None
    reason: str | None = None

    @property
    def allowed(self) -> bool:
        return self.max_seconds > 0


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in dataclasses.asdict(rate).items()}


def _rate_from_json(data: dict[str, Any]) -> Rate:
    return Rate(prefix=data["prefix"], destination=data["destination"], zone=data["zone"],
                rate_per_minute=Decimal(data["rate_per_minute"]), currency=data["currency"],
                connect_fee=Decimal(data["connect_fee"]), first_block_s=int(data["first_block_s"]),
                increment_s=int(data["increment_s"]), per_call=Decimal(data["per_call"]),
                premium_flag=data.get("premium_flag"))  # settling reads the cost only


@dataclass(frozen=True)
class Quote:
    """How a call would be rated for an account (``rating`` None: no such account). ``refused`` says why
    the engine would not place it: trial over, no rate, a row in another currency (credit aside)."""

    terms: store.AccountTerms | None
    plan: Plan | None
    rating: Rating | None
    refused: str | None
    included_used_s: int = 0


async def quote(pool: Any, account_id: uuid.UUID, from_e164: str, to_e164: str, seconds: int, at: dt.datetime, *,
                plans: Plans | None = None, decks: DeckLoader | None = None,
                user_id: uuid.UUID | None = None) -> Quote:
    """The one answer to "how is this call rated for this account?", for the engine's authorisation
    (``authorize``) and for `callctl rate`: so the command never prices a call the engine would refuse."""
    plans = plans or load_plans()
    terms = await store.account_terms(pool, account_id)
    if terms is None:
        return Quote(None, None, None, f"account {account_id} does not exist")
    plan = plans.get(terms.plan)
    in_force = await (decks or store.load_decks)(pool, at)
    used_s = 0
    if plan.included_seconds_per_user is not None and user_id is not None:
        used_s = await store.included_seconds_used(pool, account_id, user_id, terms.created_at)
    rating = rate_call(in_force, plan, from_e164, to_e164, seconds, at, included_used_s=used_s,
                       currency=terms.currency)
    problem = trial_problem(plan, terms.created_at, at, terms.users, terms.numbers)
    return Quote(terms, plan, rating, problem if problem is not None else rating.refused, used_s)


async def settle_rerouted(pool: Any, channel_id: str, asterisk_id: str | None, *,
                          keep: Collection[uuid.UUID] = ()) -> list[SweptHold]:
    """Settle, at zero, the open holds a previous engine took for the call on ``channel_id`` (on Asterisk
    ``asterisk_id``) that is now being routed again: an engine restart found the caller in the app with
    no attempt bridged (callctl.calls.adoption cancels the attempts still ringing), so the new routing
    takes its own hold and the old one must not pay for the same seconds again (the sweep would settle it
    from the caller channel's events, which cover the new call). Zero is what the old attempts certainly
    talked: an attempt still ringing talked nothing; one answered whose far end left while no engine was
    connected talked an unknown time, never billed more than certain (logged with the caller channel's
    answer time, for the operator). ``keep``: this engine's own holds."""
    holds = [h for h in await store.open_holds_on_channel(pool, channel_id, asterisk_id) if h.id not in keep]
    if not holds:
        return []
    answered = await cel_store.answered_at(pool, channel_id)
    swept = []
    for hold in holds:
        cost = await settle(pool, hold.id, 0)
        swept.append(SweptHold(hold.id, channel_id, 0, "rerouted", cost))
    log.warning("credit_holds_of_rerouted_call_released", holds=len(holds), channel=channel_id,
                caller_answered_at=answered.isoformat() if answered is not None else None)
    return swept


async def authorize(pool: Any, account_id: uuid.UUID, from_e164: str, to_e164: str, at: dt.datetime, *,
                    plans: Plans | None = None, cap_s: int = MAX_CALL_S, min_seconds: int = 1,
                    decks: DeckLoader | None = None, user_id: uuid.UUID | None = None,
                    channel_id: str | None = None, asterisk_id: str | None = None,
                    keep: Collection[uuid.UUID] = ()) -> Authorization:
    """Authorise a call: included calls get ``cap_s`` with no hold (on a plan with a per-user allowance,
    at most the seconds ``user_id`` has left of it, held for the call: store.hold_allowance); billed
    calls get the longest duration the available credit pays for (at most ``cap_s``), held by a
    reservation. Refused (max_seconds 0, ``reason`` set)
    when the account, rate or credit is missing, the rate is in another currency than the account's
    (``quote``), or the credit pays for less than ``min_seconds``. ``channel_id``: the call's first
    Asterisk channel (on Asterisk ``asterisk_id``), kept on the hold for the sweep (settle_abandoned).

    A previous engine's open holds on ``channel_id`` (the call is routed again after a restart) are
    settled at zero first (``settle_rerouted``; ``keep``: this engine's own holds).

    Raises StoreUnavailable when PostgreSQL is down (the caller decides whether to place the call).
    """
    if channel_id is not None:
        await settle_rerouted(pool, channel_id, asterisk_id, keep=keep)
    for _attempt in range(2):
        q = await quote(pool, account_id, from_e164, to_e164, 1, at, plans=plans, decks=decks, user_id=user_id)
        if q.refused is not None or q.rating is None or q.plan is None or q.terms is None:
            rated = q.rating if q.rating is not None and q.rating.refused is not None else None  # not a trial's end
            return Authorization(0, None, rated, q.refused)
        rating, terms = q.rating, q.terms
        if not rating.included:
            break
        allowance_s = q.plan.included_seconds_per_user
        if allowance_s is None or user_id is None:
            return Authorization(cap_s, None, rating)
        # A per-user allowance (trial): the seconds left are held for this call, like credit, so parallel
        # calls of the user on any node never get the same seconds (settled by finish or the sweep).
        held = await store.hold_allowance(pool, account_id, user_id, terms.created_at, allowance_s, cap_s=cap_s,
                                          min_seconds=min_seconds,
                                          rate=_rate_json(rating.rate) if rating.rate is not None else {},
                                          channel_id=channel_id, asterisk_id=asterisk_id)
        if held is not None:
            return Authorization(held[1], held[0], rating)
        # The user's other calls took what was left since the quote: rated again, beyond the allowance now.
    else:
        return Authorization(0, None, rating, f"what is left of the included allowance of user {user_id} is "
                                              f"held by its other calls")
    rate = rating.rate
    if rate is None:  # cannot happen: a rated call carries its row
        return Authorization(0, None, rating, rating.why)
    credit = await store.credit(pool, account_id)
    available = credit.available if credit is not None else Decimal(0)
    seconds = max_authorised_seconds(available, rate, cap_s=cap_s)
    if seconds < min_seconds:
        return Authorization(0, None, rating, f"prepaid credit {money_text(available)} {terms.currency} does not "
                                              f"pay for {min_seconds} s to {rate.destination}: top up the account")
    rid = await store.reserve(pool, account_id, reservation_amount(rate, seconds), max_seconds=seconds,
                              rate=_rate_json(rate), channel_id=channel_id,
                              asterisk_id=asterisk_id)
    if rid is None:
        # Another call took the credit between our read and our hold: recompute once with what is left.
        credit = await store.credit(pool, account_id)
        available = credit.available if credit is not None else Decimal(0)
        seconds = max_authorised_seconds(available, rate, cap_s=cap_s)
        rid = (await store.reserve(pool, account_id, reservation_amount(rate, seconds), max_seconds=seconds,
                                   rate=_rate_json(rate), channel_id=channel_id,
                                   asterisk_id=asterisk_id)) if seconds >= min_seconds else None
        if rid is None:
            return Authorization(0, None, rating, f"prepaid credit is held by other calls on account "
                                                  f"{account_id}: not enough left for {min_seconds} s")
    return Authorization(seconds, rid, rating)


async def settle(pool: Any, reservation_id: uuid.UUID, billed_seconds: int) -> Decimal:
    """Debit the true cost of a call that lasted ``billed_seconds`` (answer to end, whole seconds) and
    release its hold; returns the cost debited (never more than was held). Safe to call twice."""
    res = await store.reservation(pool, reservation_id)
    if res is None:
        raise StoreError(f"credit reservation {reservation_id} does not exist")
    if res.kind == "allowance":
        return await store.settle(pool, reservation_id, Decimal(0), billed_seconds)
    cost = call_cost(_rate_from_json(res.rate), max(0, min(billed_seconds, res.max_seconds)))
    return await store.settle(pool, reservation_id, cost, billed_seconds)


@dataclass(frozen=True)
class SweptHold:
    """A hold the sweep settled: ``source`` of its seconds is ``cel`` (Asterisk's channel events),
    ``engine`` (what an engine saw of the call: a recovered or adopted call), ``full_hold``, or
    ``rerouted`` (its call was routed again by another engine: settle_rerouted)."""

    reservation_id: uuid.UUID
    channel_id: str | None
    seconds: int
    source: str
    cost: Decimal


ChannelUp = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class Sweep:
    settled: list[SweptHold]
    kept: int  # other engines' holds whose call is (or may be) still up: look again later


async def settle_abandoned(pool: Any, live: Collection[str], known_s: Mapping[str, int] | None = None, *,
                           exclude: Collection[uuid.UUID] = (), is_up: ChannelUp | None = None,
                           asterisk_id: str | None = None) -> Sweep:
    """Settle the holds of calls that ended while no engine was connected (their engine died).

    Kept: this engine's own holds (``exclude``), a hold whose channel is in ``live`` (a call an engine
    owns now) or, asked last, still exists in Asterisk (``is_up``: ringing, or outside the app), and a
    hold without a channel until its whole duration has surely passed. A hold taken on another Asterisk
    than ``asterisk_id`` (a node sharing the database) is left to that node's engine until its whole
    duration has passed (then swept like the others, not counted as kept). The others are settled with the
    seconds the call talked, from Asterisk's channel events when it recorded the channel's end, else
    from ``known_s`` (channel -> billed seconds an engine saw), else at the full hold (Asterisk cut the
    call at its limit). Settling is idempotent: a hold is never debited twice, whoever sweeps.
    """
    kept = 0
    holds = []
    for hold in await store.open_reservations(pool, UNKNOWN_CHANNEL_MARGIN_S, asterisk_id):
        if hold.id in exclude or (hold.foreign and not hold.expired):
            continue
        if (hold.channel_id in live) if hold.channel_id else not hold.expired:
            kept += 1
        else:
            holds.append(hold)
    times = await cel_store.ended_channel_times(pool, [h.channel_id for h in holds if h.channel_id])
    known_s = known_s or {}
    swept = []
    for hold in holds:
        channel = hold.channel_id or ""
        if channel in times:
            seconds, source = answered_seconds(times[channel].answered_at, times[channel].ended_at), "cel"
        elif channel in known_s:
            seconds, source = known_s[channel], "engine"
        elif channel and is_up is not None and not hold.foreign and await is_up(channel):
            kept += 1
            continue
        else:
            seconds, source = hold.max_seconds, "full_hold"
        cost = await settle(pool, hold.id, seconds)
        swept.append(SweptHold(hold.id, hold.channel_id, min(seconds, hold.max_seconds), source, cost))
    return Sweep(swept, kept)


def cdr_rating(auth: Authorization, cost: Decimal | None) -> dict[str, Any]:
    """The CDR rating columns (callctl.cdr.record.RATING_FIELDS) of an authorised call that cost ``cost``."""
    r = auth.rating
    if r is None:
        return {}
    return {"rating_deck": r.deck, "rating_prefix": r.prefix, "rate_per_minute": r.rate_per_minute,
            "cost": Decimal(0) if r.included else cost, "currency": r.currency, "included": r.included}


class PrepaidBilling:
    """The outbound call path's view of billing (callctl.lines.routing.Billing) over a pool."""

    def __init__(self, pool: Any, plans: Plans, asterisk_id: Callable[[], str | None] = lambda: None) -> None:
        self._pool = pool
        self._plans = plans
        self._asterisk_id = asterisk_id  # entity id of the Asterisk this engine drives (known once connected)
        self._decks = DeckCache()
        self._open: set[uuid.UUID] = set()  # holds of this engine's calls, authorised and not finished
        self._sweep_failing = False

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization:
        auth = await authorize(self._pool, account_id, from_e164, to_e164, dt.datetime.now(dt.UTC),
                               plans=self._plans, decks=self._decks, user_id=user_id, channel_id=channel_id,
                               asterisk_id=self._asterisk_id(), keep=set(self._open))
        if auth.reservation_id is not None:
            self._open.add(auth.reservation_id)
        return auth

    async def finish(self, auth: Authorization, billed_seconds: int) -> dict[str, Any]:
        """Settle the call's hold (if any) with its true cost; the CDR rating columns of the leg."""
        cost = None
        if auth.reservation_id is not None:
            try:
                cost = await settle(self._pool, auth.reservation_id, billed_seconds)
            finally:  # not settled (PostgreSQL down): the next sweep settles it from Asterisk's events
                self._open.discard(auth.reservation_id)
        return cdr_rating(auth, cost)

    async def settle_abandoned(self, live: Collection[str], known_s: Mapping[str, int] | None = None,
                               is_up: ChannelUp | None = None) -> int:
        """The sweep (settle_abandoned) around this engine's own calls; logs what it settled, once.
        Returns how many holds were kept for a later sweep (1 when PostgreSQL could not be asked)."""
        try:
            sweep = await settle_abandoned(self._pool, live, known_s, exclude=set(self._open), is_up=is_up,
                                           asterisk_id=self._asterisk_id())
        except StoreError as exc:
            if not self._sweep_failing:  # once per outage; the sweep is retried until it works
                log.warning("credit_holds_sweep_failed", error=exc.message)
            self._sweep_failing = True
            return 1
        self._sweep_failing = False
        if sweep.settled:
            log.warning("credit_holds_settled_after_engine_loss", holds=len(sweep.settled), kept=sweep.kept,
                        full_hold=sum(1 for s in sweep.settled if s.source == "full_hold"),
                        from_cel=sum(1 for s in sweep.settled if s.source == "cel"))
        return sweep.kept
