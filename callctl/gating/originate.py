"""Automated calls the engine itself places (``callctl originate``): the dialer gate first, then an ARI
originate to the PSTN trunk; the answered call enters the app and runs the requested flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from callctl.calls.port import Authorization, CallPort
from callctl.errors import AriError, StoreError
from callctl.flows.engine import run_flow
from callctl.flows.model import Dialplan, Route
from callctl.gating.service import callee_country, decide_originated
from callctl.logging import get_logger
from callctl.numbers import e164_or_none, mask
from callctl.store import gating as store
from callctl.tasks import SideTasks

log = get_logger("callctl.gating")

ORIGINATE_ARG = "callctl-originate"  # first Stasis arg of an originated call; then flow, account, to, from, country
TRUNK = "pstn"
RING_TIMEOUT_S = 45.0
UNANSWERED_MARGIN_S = 15.0  # after the ring timeout, an authorisation nobody answered is released
NOT_PLACED_RETRY_S = 5.0  # a "not placed" the database refused is written again this often...
NOT_PLACED_GIVE_UP_S = 1800.0  # ... for this long (then logged: the attempt counts towards the cap)


class Originate(Protocol):
    async def __call__(self, channel_id: str, endpoint: str, *, timeout_s: float, caller_id: str | None,
                       variables: dict[str, str] | None = None, app_args: str) -> None: ...


class Billing(Protocol):
    """Prepaid authorisation and settlement (callctl.billing.service.PrepaidBilling), as for SIP users."""

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization: ...

    # auth: Any, as each billing service takes back only the authorisation type its own authorize made.
    async def finish(self, auth: Any, billed_seconds: int) -> dict[str, Any]: ...


class FraudScreen(Protocol):
    """Destination permissions and spend limits before a call is placed (issue 20: the fraud screen,
    callctl.fraud.service.FraudService, wired by app.py)."""

    async def refuse_originate(self, account_id: uuid.UUID, country: str, number: str, channel_id: str,
                               auth: Authorization | None, record_id: int | None = None
                               ) -> Mapping[str, str | None] | None:
        """None: place it; else the request's answer fields (the dialer record ``record_id`` says refused)."""


class Dialer:
    """Owns the originate action: ``request`` (the HTTP action's body) and ``run`` (the answered call)."""

    fraud: FraudScreen | None = None  # set by app.py

    def __init__(self, pool: Any, dialplan: Callable[[], Dialplan], originate: Originate,
                 ready: Callable[[], bool], clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 *, billing: Billing | None = None) -> None:
        self._pool = pool
        self._dialplan = dialplan
        self._originate = originate
        self._ready = ready
        self._clock = clock
        self._billing = billing
        # Authorisations of calls placed and not answered yet, by channel id (run() takes them over;
        # a call never answered gives its hold back after the ring timeout).
        self._held: dict[str, Authorization] = {}
        self._tasks = SideTasks("originate_task_failed")

    async def request(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """{account, from, to, flow} -> (HTTP status, answer): the gate's decision (recorded), and whether
        the call was placed."""
        plan = self._dialplan()
        try:
            account_id = uuid.UUID(str(body["account"]))
            from_number, to_number, flow = str(body["from"]), str(body["to"]), str(body["flow"])
        except (KeyError, ValueError):
            return 400, {"error": "originate needs account (a UUID), from, to and flow"}
        if flow not in plan.flows:
            return 400, {"error": f"unknown flow '{flow}' (known: {', '.join(sorted(plan.flows))})"}
        if not self._ready():
            return 503, {"error": "not connected to Asterisk, or draining: no call can be placed now"}
        try:
            country = await store.account_country(self._pool, account_id)
            if country is None:
                return 404, {"error": f"no account {account_id} (see: callctl account create)"}
            caller = e164_or_none(from_number, country)
            if caller is None:
                return 400, {"error": f"from '{from_number}' is not a number in E.164 or of {country}"}
            decision = await decide_originated(self._pool, plan.countries, account_id, caller, to_number,
                                               self._clock(), account_country=country)
        except StoreError as exc:
            return 503, {"error": exc.message}
        answer = {**decision.as_json(), "originated": False}
        if not decision.allowed:
            return 200, answer
        auth: Authorization | None = None
        channel_id = str(uuid.uuid4())
        if self._billing is not None:
            # Like a SIP user's call: prepaid credit pays for it, the limit is enforced inside Asterisk.
            try:
                auth = await self._billing.authorize(account_id, caller, decision.number_e164, channel_id=channel_id)
                if not auth.allowed and decision.record_id is not None:
                    # Not placed: the attempt must not use up one of the callee's 4 calls in 30 days.
                    await store.refuse_for_credit(self._pool, decision.record_id, str(auth.reason))
            except StoreError as exc:
                await self._not_placed(decision.record_id, "store_unavailable", exc.message)
                return 503, {**answer, "error": exc.message}
            if not auth.allowed:
                log.info("originate_not_authorised", reason=auth.reason)
                return 200, {**answer, "decision": "deny", "rule": "credit", "reason": auth.reason, "route": None,
                             "error": f"not placed: {auth.reason}"}
        if self.fraud is not None:  # issue 20: permissions and spend limits, before the call is placed
            refused = await self.fraud.refuse_originate(account_id, country, decision.number_e164, channel_id, auth,
                                                        decision.record_id)
            if refused is not None:
                if auth is not None and self._billing is not None:
                    await self._billing.finish(auth, 0)
                return 200, {**answer, **refused}
        callee = callee_country(decision.number_e164, plan.countries, country)
        args = ",".join((ORIGINATE_ARG, flow, str(account_id), decision.number_e164, caller,
                         callee.code if callee is not None else country))
        variables = None
        if auth is not None:
            # Ringing counts here; the limit is set again at answer (run), exactly.
            variables = {"TIMEOUT(absolute)": str(int(auth.max_seconds + RING_TIMEOUT_S))}
            self._held[channel_id] = auth
        try:
            await self._originate(channel_id, f"PJSIP/{decision.number_e164}@{TRUNK}", timeout_s=RING_TIMEOUT_S,
                                  caller_id=caller, variables=variables, app_args=args)
        except AriError as exc:
            log.warning("originate_failed", error=exc.message)
            await self._release(channel_id, 0)
            await self._not_placed(decision.record_id, "originate_failed", exc.message)
            return 502, {**answer, "error": exc.message}
        if auth is not None:
            asyncio.get_running_loop().call_later(RING_TIMEOUT_S + UNANSWERED_MARGIN_S, self._unanswered, channel_id)
        log.info("call_originated", account_id=str(account_id), flow=flow, number=mask(decision.number_e164),
                 channel=channel_id)
        return 200, {**answer, "originated": True, "channel_id": channel_id}

    @staticmethod
    def is_originated(args: tuple[str, ...]) -> bool:
        return args[:1] == (ORIGINATE_ARG,)

    @staticmethod
    def _tag(call: CallPort) -> tuple[str, str]:
        """The call's numbers and CDR tags from its Stasis arguments (the account's): (flow, country code)."""
        _, flow, account_id, to_number, from_number, country_code = (list(call.args) + [""] * 6)[:6]
        call.called, call.caller = to_number, from_number
        result = call.result
        result.flow, result.account_id, result.direction = flow, account_id, "outbound"
        result.extra["originated"] = True
        return flow, country_code

    async def resume(self, call: CallPort, plan: Dialplan) -> str:
        """A dialer call whose flow a previous engine had bridged with someone (a ``dial`` step), found up
        after a restart (the router's resume handler for ``callctl-originate``): tagged as ``run`` tags it,
        so its CDR stays the account's, and kept up as it is (no flow replayed, no second dial). Its
        credit hold is settled from its real seconds when it ends (the supervisor's sweep)."""
        assert call.resumed is not None
        flow, country_code = self._tag(call)
        country = plan.countries.get(country_code)
        if country is not None:
            call.language, call.country = country.language, country.code
        log.info("dialer_call_resumed", flow=flow)
        leg = call.resumed[0]
        outcome = await call.resume_bridged(leg.name.rsplit("-", 1)[0])  # "PJSIP/pstn-0000002a": its endpoint
        return f"resumed_{outcome.status}"

    async def run(self, call: CallPort, plan: Dialplan) -> str:
        """The answered call (the router's handler for ``callctl-originate``): its flow, in the callee
        country's language; CDR tagged with the account."""
        flow, country_code = self._tag(call)
        to_number, result = call.called, call.result
        country = plan.countries.get(country_code)
        if flow not in plan.flows or country is None:  # a reload removed it while the callee's phone rang
            log.warning("originated_flow_missing", flow=flow)
            await call.hang_up("normal")
            return "flow_missing"
        call.language, call.country = country.language, country.code
        route = Route(flow=flow, language=country.language, country=country.code, tags=("originated",),
                      number=to_number, entry=to_number, pos=plan.flows[flow].pos)
        auth = self._held.pop(call.channel_id, None)
        billing = self._billing
        if auth is not None and billing is not None:
            async def settle(seconds: int) -> Mapping[str, Any]:
                return await billing.finish(auth, seconds)

            # Settled by the supervisor with the CDR's own billed seconds (Asterisk's end of the
            # channel), so the debit and the CDR always agree.
            result.on_end = settle
        if auth is not None and auth.max_seconds:
            await call.limit_talk(auth.max_seconds)
        ran = await run_flow(plan, route, call, record=call.result.trace)
        result.flow = ran.flow
        return ran.outcome

    def _unanswered(self, channel_id: str) -> None:
        """The ring timeout passed and the call never entered the app: give its hold back."""
        if channel_id in self._held:
            self._tasks.spawn(self._release(channel_id, 0))

    async def _not_placed(self, record_id: int | None, rule: str, reason: str) -> None:
        """The gate allowed the call (and counted it towards the callee's cap) but it was not placed: its
        record says so, now or, while PostgreSQL refuses, in the background until it can."""
        if record_id is None:
            return
        try:
            await store.not_placed(self._pool, record_id, rule, reason)
        except StoreError as exc:
            log.warning("originate_not_placed_unrecorded", error=exc.message, retry_in_s=NOT_PLACED_RETRY_S)
            self._tasks.spawn(self._retry_not_placed(record_id, rule, reason))

    async def _retry_not_placed(self, record_id: int, rule: str, reason: str) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + NOT_PLACED_GIVE_UP_S
        while loop.time() < give_up_at:
            await asyncio.sleep(NOT_PLACED_RETRY_S)
            try:
                await store.not_placed(self._pool, record_id, rule, reason)
            except StoreError:
                continue
            log.info("originate_not_placed_recorded", rule=rule)
            return
        log.error("originate_not_placed_lost", rule=rule, record_id=record_id)

    async def close(self) -> None:
        """Background writes get a moment to finish; the rest is cancelled (logged by their owner)."""
        if not await self._tasks.wait_for_done(2.0):
            self._tasks.cancel()

    async def _release(self, channel_id: str, seconds: int) -> None:
        auth = self._held.pop(channel_id, None)
        if auth is None or self._billing is None:
            return
        try:
            await self._billing.finish(auth, seconds)
        except StoreError as exc:
            log.warning("originate_hold_not_released", error=exc.message, channel=channel_id)
