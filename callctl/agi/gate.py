"""The FastAGI ``gate`` route: the gating decision as channel variables for extensions.conf, and a CDR
of the decision for the calling channel (calls an operator's own dialplan routes through the gate)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from callctl.agi.server import AgiRequest
from callctl.cdr.record import LEG_NAMESPACE, CdrRecord
from callctl.countries import Country
from callctl.fraud.rules import Destination, FraudPolicy, Refusal, classify, permission_refusal
from callctl.fraud.service import agi_variables
from callctl.gating import parsed
from callctl.gating.service import Decision, decide
from callctl.numbers import storable
from callctl.store.facts import GateFacts, read_gate_facts

Submit = Callable[[CdrRecord], None]


class FraudScreen(Protocol):
    """Destination permissions and suspension for a call the operator's dialplan will dial (issue 20:
    callctl.fraud.service.FraudService, wired by app.py)."""

    @property
    def policy(self) -> FraudPolicy: ...

    async def refuse_agi(self, account_id: uuid.UUID, country: str, number: str) -> Refusal | None: ...


class FactsSource(Protocol):
    """The per-account facts of a decision (callctl.store.facts.AccountFactsCache in the daemon)."""

    async def gate_facts(self, db: Any, account_id: uuid.UUID) -> GateFacts | None: ...


class _Uncached:
    async def gate_facts(self, db: Any, account_id: uuid.UUID) -> GateFacts | None:
        return await read_gate_facts(db, account_id)


def _deny(rule: str, reason: str) -> dict[str, str]:
    return {"CALLCTL_GATE": "deny", "CALLCTL_GATE_RULE": rule, "CALLCTL_GATE_REASON": reason}


def gate_leg_id(request: AgiRequest) -> uuid.UUID:
    """The CDR leg id of the channel that asked: from the Asterisk that asked (its address) and the
    channel's uniqueid, so a channel that runs the gate twice, or a replay, is recorded once."""
    return uuid.uuid5(LEG_NAMESPACE, f"fastagi-gate/{request.peer}/{request.get('agi_uniqueid')}")


def gate_cdr(request: AgiRequest, account_id: uuid.UUID, country: str, decision: Decision,
             at: dt.datetime) -> CdrRecord:
    """The record of one gate decision on the calling channel (docs/gating.md): the decision's time as
    start and end (the call itself is Asterisk's to carry; its duration is in Asterisk's channel events),
    disposition GATE_ALLOWED or GATE_REFUSED, the rule in ``extra``. An allowed emergency call is free."""
    leg = gate_leg_id(request)
    free = decision.allowed and decision.emergency
    return CdrRecord(
        leg_id=leg, call_id=leg, direction="inbound",
        from_number=storable(parsed.e164_or_raw(request.get("agi_callerid"), country)),
        to_number=storable(decision.number_e164 or request.get("agi_extension")),
        started_at=at, answered_at=None, ended_at=at,
        disposition="GATE_ALLOWED" if decision.allowed else "GATE_REFUSED", hangup_cause=None,
        hangup_reason=storable(decision.reason, 200), channel_id=storable(request.get("agi_uniqueid")),
        account_id=str(account_id),
        extra={"decided_by": "fastagi_gate", "gate": decision.decision, "rule": decision.rule,
               "route": decision.route, "emergency": decision.emergency,
               "channel": storable(request.get("agi_channel"), 200), "asterisk": request.peer},
        cost=Decimal(0) if free else None, included=True if free else None)


@functools.lru_cache(maxsize=parsed.CACHE_SIZE)
def _destination(number: str, country: str, high_risk_prefixes: tuple[str, ...]) -> Destination:
    """What the dialled number is (fraud classification: a phonenumbers parse and a number-type
    lookup), once per distinct (number, account country, policy prefixes): a pure function, bounded."""
    return classify(number, country, high_risk_prefixes)


def _may_refuse(known: GateFacts, policy: FraudPolicy, country: str, number: str) -> bool:
    """Whether the fraud screen could refuse this call, judged on the facts read with the decision."""
    if known.suspended:
        return True
    prefixes = tuple(policy.high_risk_prefixes)
    destination = (_destination(number, country, prefixes) if parsed.cacheable(number, country)
                   else classify(number, country, prefixes))
    return permission_refusal(known.permissions, destination) is not None


def gate_handler(pool: Any, countries: Mapping[str, Country],
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC), *,
                 submit: Submit | None = None,
                 fraud: FraudScreen | None = None,
                 facts: FactsSource | None = None) -> Callable[[AgiRequest], Awaitable[Mapping[str, str]]]:
    """``AGI(agi://127.0.0.1:4573/gate?account=ID)`` or ``AGI(agi://127.0.0.1:4573/gate,ID)``.
    ``submit``: the CDR writer's (a decision's CDR is handed to it, never awaited); ``fraud``: the
    destination permissions and spend limits (issue 20), never asked about emergency calls; ``facts``:
    where the account's facts come from (the daemon's cache; default: one statement per decision).

    An allowed call whose cached permissions and suspension allow it costs no database round trip; a
    call they refuse goes to ``fraud.refuse_agi``, which reads them again and records the refusal."""
    source: FactsSource = facts if facts is not None else _Uncached()

    async def handle(request: AgiRequest) -> Mapping[str, str]:
        if request.script != "gate":
            return _deny("agi_unknown_route", f"no FastAGI route '{request.script}' (known: gate)")
        raw = request.params.get("account") or (request.args[0] if request.args else "")
        try:
            account_id = uuid.UUID(raw)
        except ValueError:
            return _deny("agi_bad_account", "pass the account: agi://127.0.0.1:4573/gate?account=ID")
        known = await source.gate_facts(pool, account_id)
        country = request.params.get("country") or (known.country if known is not None else None)
        if country is None:
            return _deny("unknown_account", f"no account {account_id}")
        automated = known is not None and known.automated
        at = clock()
        decision = await decide(pool, countries, account_id, request.get("agi_callerid"),
                                request.get("agi_extension"), at, account_country=country,
                                automated=automated)
        refusal = None
        if fraud is not None and decision.allowed and not decision.emergency:  # issue 20: never emergency calls
            if known is None or _may_refuse(known, fraud.policy, country, decision.number_e164):
                refusal = await fraud.refuse_agi(account_id, country, decision.number_e164)
            if refusal is not None:  # the CDR names the fraud rule, like the engine's own refused calls
                decision = dataclasses.replace(decision, decision="deny", rule=refusal.rule, reason=refusal.reason)
        if submit is not None and request.get("agi_uniqueid"):
            submit(gate_cdr(request, account_id, country, decision, at))
        if refusal is not None:
            return {**agi_variables(refusal, decision.number_e164), "CALLCTL_GATE_COUNTRY": country.strip().upper()}
        return {"CALLCTL_GATE": decision.decision, "CALLCTL_GATE_RULE": decision.rule,
                "CALLCTL_GATE_REASON": decision.reason, "CALLCTL_GATE_ROUTE": decision.route or "",
                "CALLCTL_GATE_NUMBER": decision.number_e164,
                "CALLCTL_GATE_EMERGENCY": "1" if decision.emergency else "0",
                "CALLCTL_GATE_LOCATION": decision.location or "",
                "CALLCTL_GATE_COUNTRY": country.strip().upper()}

    return handle
