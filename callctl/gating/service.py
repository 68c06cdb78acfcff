"""The gate: one decision per call attempt, emergency classification first (no I/O unless emergency)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from callctl.countries import Country
from callctl.gating import ALLOW, DENY, Verdict, parsed
from callctl.gating import compliance as rules
from callctl.gating.emergency import NOT_ACTIVATED, emergency_number, emergency_verdict
from callctl.numbers import mask, storable
from callctl.store import gating as store

log = structlog.get_logger("callctl.gating")

ROUTE_EMERGENCY = "emergency"
ROUTE_PSTN = "pstn"


@dataclass(frozen=True)
class Decision:
    decision: str  # allow | deny
    rule: str
    reason: str
    emergency: bool
    number_e164: str  # the emergency short number as dialled, for emergency calls
    location: str | None  # the location on file, sent with an allowed emergency call
    list_version: int | None  # opposition list version consulted (automated calls)
    language: str | None = None  # emergency calls: the caller's country language (the refusal announcement)
    record_id: int | None = None  # automated attempts: the decision record (gating_decision.id)

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    @property
    def route(self) -> str | None:
        if not self.allowed:
            return None
        return ROUTE_EMERGENCY if self.emergency else ROUTE_PSTN

    def as_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "rule": self.rule, "reason": self.reason, "emergency": self.emergency,
                "route": self.route, "number": self.number_e164, "location": self.location,
                "optout_list_version": self.list_version}


def dialer_rules(country: Country | None, from_e164: str,
                 at: dt.datetime) -> Callable[[store.DialerFacts], Verdict]:
    """The pure dialer rules, applied to the facts read under the (account, callee) lock."""

    def apply(facts: store.DialerFacts) -> Verdict:
        for verdict in (rules.sector_verdict(facts.sector), rules.caller_id_verdict(from_e164),
                        rules.window_verdict(country, at) if country is not None else None,
                        rules.optout_verdict(facts.listed, facts.exception, facts.list_version),
                        rules.cap_verdict(facts.recent_calls)):
            if verdict is not None:
                return verdict
        return rules.ALLOWED

    return apply


def callee_country(e164: str, countries: Mapping[str, Country], fallback: str) -> Country | None:
    """The country of the number called (its canvassing window, its language), else ``fallback``'s."""
    return countries.get(parsed.region(e164) or "") or countries.get(fallback)


async def decide(pool: Any, countries: Mapping[str, Country], account_id: uuid.UUID, from_e164: str, dialled: str,
                 at: dt.datetime, *, account_country: str, automated: bool) -> Decision:
    """Decide one attempt. Emergency numbers are classified first from ``account_country`` alone; only
    they read the account's emergency status. Compliance runs only for automated calls. Every refusal,
    every emergency call and every automated attempt leaves a decision record.

    ``from_e164`` and ``dialled`` are taken as received: text PostgreSQL cannot store (NUL, lone
    surrogates, control characters) is replaced before anything is decided or recorded, so garbage in
    the caller field never stops an emergency decision, and garbage in the dialled number is an invalid
    number."""
    from_e164, dialled = storable(from_e164), storable(dialled)
    short = emergency_number(countries, account_country, dialled)
    if short is not None:
        country = countries[account_country.strip().upper()]
        status = await store.get_emergency(pool, account_id) or NOT_ACTIVATED
        verdict = emergency_verdict(country, status)
        await store.record_decision(pool, store.DecisionRecord(account_id, at, from_e164, short, verdict, True,
                                                               automated, False, None))
        if not verdict.allowed:
            log.warning("emergency_call_refused", account_id=str(account_id), number=short, rule=verdict.rule)
        location = status.location if verdict.allowed else None
        return Decision(verdict.decision, verdict.rule, verdict.reason, True, short, location, None,
                        country.language)

    number = parsed.e164(dialled, account_country)
    if number is None:
        verdict = Verdict(DENY, "number_invalid", f"'{dialled}' is not a callable number from {account_country}")
        await store.record_decision(pool, store.DecisionRecord(account_id, at, from_e164, dialled, verdict, False,
                                                               automated, automated, None))
        return Decision(verdict.decision, verdict.rule, verdict.reason, False, dialled, None, None)
    if not automated:
        return Decision(ALLOW, "not_gated", "not an emergency number; no dialer rules for manual calls", False,
                        number, None, None)
    callee_country_ = callee_country(number, countries, account_country)
    verdict, version, record_id = await store.dialer_attempt(pool, account_id, from_e164, number, at, rules.CAP_WINDOW,
                                                  dialer_rules(callee_country_, from_e164, at))
    if not verdict.allowed:
        log.info("dialer_call_refused", account_id=str(account_id), number=mask(number), rule=verdict.rule)
    return Decision(verdict.decision, verdict.rule, verdict.reason, False, number, None, version,
                    record_id=record_id)


async def decide_originated(pool: Any, countries: Mapping[str, Country], account_id: uuid.UUID, from_e164: str,
                            dialled: str, at: dt.datetime, *, account_country: str) -> Decision:
    """An automated call the engine itself would place (``callctl originate``): never to an emergency
    number, always under the dialer rules (whatever the account's dialer profile says)."""
    from_e164, dialled = storable(from_e164), storable(dialled)
    if emergency_number(countries, account_country, dialled) is not None:
        verdict = Verdict(DENY, "emergency_not_originated", "the engine never originates calls to emergency numbers")
        await store.record_decision(pool, store.DecisionRecord(account_id, at, from_e164, dialled, verdict, True,
                                                               True, False, None))
        return Decision(verdict.decision, verdict.rule, verdict.reason, True, dialled, None, None)
    return await decide(pool, countries, account_id, from_e164, dialled, at, account_country=account_country,
                        automated=True)
