"""The fraud screen of outbound calls: destination permissions, then the velocity limits under the
account's lock (store.fraud.admit). Called by each call path just before its leg is dialled: SIP users'
calls and forwards (lines), originated calls (gating), the FastAGI gate. Emergency calls never get here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol

from callctl.calls.port import CallPort
from callctl.calls.result import CallResult
from callctl.errors import StoreError
from callctl.fraud.alerts import Mailer
from callctl.fraud.rules import (
    SUSPENDED,
    FraudPolicy,
    Limits,
    Refusal,
    Threshold,
    Usage,
    classify,
    permission_refusal,
    velocity,
)
from callctl.logging import get_logger
from callctl.metrics import Metrics
from callctl.numbers import mask, to_e164
from callctl.store import fraud as store

log = get_logger("callctl.fraud")

UNAVAILABLE = "fraud_check_unavailable"
TLS_REQUIRED = "tls_required"
FRENCH_COUNTRIES = frozenset({"FR", "BE", "CH", "LU", "MC", "GF", "GP", "MQ", "RE", "YT"})


class LineUserLike(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def account_id(self) -> uuid.UUID: ...
    @property
    def country(self) -> str: ...


class HeldCredit(Protocol):
    """A prepaid authorisation (callctl.billing.service.Authorization): the hold the call's spending counts."""

    @property
    def reservation_id(self) -> uuid.UUID | None: ...


def announcement(refusal: Refusal, country: str) -> list[str]:
    """What the caller hears: the suspension or the barred destination, in the line's language."""
    if refusal.rule in (UNAVAILABLE, TLS_REQUIRED):  # not about the destination: "cannot be completed"
        return ["sound:cannot-complete-as-dialed"]
    lang = "fr" if country.strip().upper() in FRENCH_COUNTRIES else "en"
    prompt = "outbound-suspended" if refusal.rule == SUSPENDED or refusal.disposition.endswith("_LIMIT") \
        else "destination-barred"
    return [f"sound:callctl/{lang}/{prompt}"]


class FraudService:
    def __init__(self, pool: Any, policy: FraudPolicy | None = None, *, metrics: Metrics | None = None,
                 mailer: Mailer | None = None, channel_var: Callable[[str, str], Awaitable[str | None]] | None = None
                 ) -> None:
        self._pool = pool
        self._channel_var = channel_var  # reads CHANNEL(pjsip,secure) of a calling phone (ARI)
        self.policy = policy or FraudPolicy()
        self._metrics = metrics
        self._mailer = mailer
        if metrics is not None:
            metrics.counter("callctl_fraud_refusals_total", "Outbound calls refused by a fraud rule, by rule")
            metrics.counter("callctl_fraud_warnings_total", "Fraud limit warnings sent, by rule")
            metrics.counter("callctl_fraud_suspensions_total", "Accounts whose outbound calls a hard limit suspended")

    def _count(self, name: str, **labels: str) -> None:
        if self._metrics is not None:
            self._metrics.inc(name, 1.0, **labels)

    async def permission(self, account_id: uuid.UUID, user_id: uuid.UUID | None, account_country: str,
                         number: str, path: str) -> Refusal | None:
        """The destination permission of the user (else the account); a refusal is recorded."""
        perms, _scope = await store.permissions(self._pool, account_id, user_id)
        refusal = permission_refusal(perms, classify(number, account_country, self.policy.high_risk_prefixes))
        if refusal is not None:
            await store.record_refusal(self._pool, account_id, user_id, path, number, refusal)
        return refusal

    async def admit(self, account_id: uuid.UUID, user_id: uuid.UUID | None, number: str, *, channel_id: str,
                    reservation_id: uuid.UUID | None, path: str) -> Refusal | None:
        """The velocity limits under the account's lock; the call is counted when admitted."""
        facts = await store.account_facts(self._pool, account_id)
        if facts is None:
            return Refusal(UNAVAILABLE, f"no account {account_id}")
        limits = Limits.from_json(facts.limits, self.policy.defaults)
        dest = classify(number, facts.country, self.policy.high_risk_prefixes)

        def decide(usage: Usage, own_hold: Decimal) -> tuple[Refusal | None, list[Threshold]]:
            return velocity(limits, usage, own_hold=own_hold, international=dest.international,
                            currency=facts.currency)

        adm = await store.admit(self._pool, account_id, user_id=user_id, channel_id=channel_id,
                                reservation_id=reservation_id, destination=number, international=dest.international,
                                path=path, decide=decide)
        if adm.suspended and adm.refusal is not None:
            log.error("fraud_account_suspended", account_id=str(account_id), rule=adm.refusal.rule,
                      reason=adm.refusal.reason)
            self._count("callctl_fraud_suspensions_total")
            self._alert(account_id, facts.contact_email, "suspended", adm.refusal.rule, adm.refusal.reason)
        for warning in adm.new_warnings:
            log.warning("fraud_threshold_warning", account_id=str(account_id), rule=warning.rule, reason=warning.reason)
            self._count("callctl_fraud_warnings_total", rule=warning.rule)
            self._alert(account_id, facts.contact_email, "warning", warning.rule, warning.reason)
        return adm.refusal

    def _alert(self, account_id: uuid.UUID, contact: str | None, level: str, rule: str, reason: str) -> None:
        if self._mailer is not None:
            self._mailer.send(str(account_id), contact, level=level, rule=rule, reason=reason)

    async def screen(self, account_id: uuid.UUID, user_id: uuid.UUID | None, account_country: str, number: str, *,
                     channel_id: str, reservation_id: uuid.UUID | None, path: str) -> Refusal | None:
        """Permissions, then velocity. Fails closed: without PostgreSQL no outbound call is screened, so none
        leaves (emergency calls are never screened)."""
        try:
            refusal = await self.permission(account_id, user_id, account_country, number, path)
            if refusal is None:
                refusal = await self.admit(account_id, user_id, number, channel_id=channel_id,
                                           reservation_id=reservation_id, path=path)
        except StoreError as exc:
            refusal = Refusal(UNAVAILABLE, f"the fraud counters cannot be read: {exc.message}")
        if refusal is not None:
            log.warning("fraud_call_refused", account_id=str(account_id), path=path, number=mask(number),
                        rule=refusal.rule, reason=refusal.reason)
            self._count("callctl_fraud_refusals_total", rule=refusal.rule)
        return refusal

    # -- the call paths' hooks -------------------------------------------------------------------------

    async def refuse_line_call(self, call: CallPort, user: LineUserLike, number: str,
                               auth: HeldCredit | None) -> str | None:
        """A SIP user's outbound call, after its credit was authorised: None to dial it, else the call is
        refused here (announcement, CDR disposition FRAUD_<RULE>) and the outcome returned."""
        refusal = await self._insecure(call, user)
        if refusal is None:
            refusal = await self.screen(user.account_id, user.user_id, user.country, number,
                                        channel_id=call.channel_id, path="line",
                                        reservation_id=auth.reservation_id if auth is not None else None)
        if refusal is None:
            return None
        _tag_refused(call.result, refusal)
        await call.answer()
        await call.play(announcement(refusal, user.country), interruptible=False)
        await call.hang_up("normal")
        return f"fraud_{refusal.rule}"

    async def _insecure(self, call: CallPort, user: LineUserLike) -> Refusal | None:
        """A user who requires encryption calling over UDP/TCP: Asterisk accepts SDES keys sent in clear
        (checked), so the engine refuses the call (the keys were readable on the wire)."""
        if self._channel_var is None:
            return None
        try:
            if not await store.encryption_required(self._pool, user.user_id):
                return None
            if await self._channel_var(call.channel_id, "CHANNEL(pjsip,secure)") == "1":
                return None
            refusal = Refusal(TLS_REQUIRED, "this SIP user requires TLS and SRTP but the phone called over an "
                                            "unencrypted transport: configure it for SIP over TLS")
            await store.record_refusal(self._pool, user.account_id, user.user_id, "line", "", refusal)
        except StoreError as exc:
            refusal = Refusal(UNAVAILABLE, f"the user's encryption setting cannot be read: {exc.message}")
        log.warning("fraud_call_refused", account_id=str(user.account_id), path="line", rule=refusal.rule,
                    reason=refusal.reason)
        self._count("callctl_fraud_refusals_total", rule=refusal.rule)
        return refusal

    async def forward_allowed(self, call: CallPort, user: LineUserLike, number: str) -> bool:
        """A call to a user's DID about to be forwarded to ``number`` (its forwarding number)."""
        e164 = to_e164(number, user.country)
        refusal = await self.screen(user.account_id, user.user_id, user.country, e164, channel_id=call.channel_id,
                                    reservation_id=None, path="forward")
        if refusal is not None:
            call.result.extra["forward_refused"] = refusal.rule
        return refusal is None

    async def refuse_originate(self, account_id: uuid.UUID, country: str, number: str, channel_id: str,
                               auth: HeldCredit | None, record_id: int | None = None) -> dict[str, str | None] | None:
        """A call ``callctl originate`` is about to place: None to place it, else the answer's fields. The
        dialer decision record ``record_id`` of a refused call becomes the refusal (no callee cap used)."""
        refusal = await self.screen(account_id, None, country, number, channel_id=channel_id,
                                    reservation_id=auth.reservation_id if auth is not None else None,
                                    path="originate")
        if refusal is None:
            return None
        if record_id is not None:
            try:
                await store.refuse_gating_decision(self._pool, record_id, refusal)
            except StoreError as exc:
                log.warning("fraud_decision_record_not_updated", error=exc.message, record_id=record_id)
        return {"decision": "deny", "rule": refusal.rule, "reason": refusal.reason, "route": None,
                "error": f"not placed: {refusal.reason}"}

    async def preview(self, account_id: uuid.UUID, country: str, number: str) -> Refusal | None:
        """What the fraud screen would say now about a call (permissions, suspension), recording nothing:
        for `callctl gate`."""
        perms, _scope = await store.permissions(self._pool, account_id, None)
        refusal = permission_refusal(perms, classify(number, country, self.policy.high_risk_prefixes))
        held = None if refusal is not None else await store.suspension(self._pool, account_id)
        if held is not None:
            refusal = Refusal(SUSPENDED, f"outbound calls of this account are suspended ({held['rule']}); an "
                                         "operator lifts it with `callctl fraud release`")
        return refusal

    async def refuse_agi(self, account_id: uuid.UUID, country: str, number: str) -> Refusal | None:
        """The FastAGI gate: permissions and suspension (the operator's dialplan dials the call, so it is not
        counted in the velocity limits)."""
        try:
            refusal = await self.preview(account_id, country, number)
            if refusal is not None:
                await store.record_refusal(self._pool, account_id, None, "agi", number, refusal)
        except StoreError as exc:
            refusal = Refusal(UNAVAILABLE, f"the fraud counters cannot be read: {exc.message}")
        if refusal is not None:
            log.warning("fraud_call_refused", account_id=str(account_id), path="agi", number=mask(number),
                        rule=refusal.rule)
            self._count("callctl_fraud_refusals_total", rule=refusal.rule)
        return refusal


def _tag_refused(result: CallResult, refusal: Refusal) -> None:
    result.disposition = refusal.disposition
    result.extra["refused"] = refusal.rule
    result.extra["fraud_reason"] = refusal.reason


def agi_variables(refusal: Refusal, number: str) -> dict[str, str]:
    """The FastAGI gate's channel variables for a fraud refusal (the dialplan plays its announcement)."""
    return {"CALLCTL_GATE": "deny", "CALLCTL_GATE_RULE": refusal.rule, "CALLCTL_GATE_REASON": refusal.reason,
            "CALLCTL_GATE_ROUTE": "", "CALLCTL_GATE_NUMBER": number, "CALLCTL_GATE_EMERGENCY": "0",
            "CALLCTL_GATE_DISPOSITION": refusal.disposition}


__all__: Sequence[str] = ("FraudPolicy", "FraudService", "agi_variables", "announcement")
