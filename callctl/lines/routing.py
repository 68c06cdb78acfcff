"""Business-line calls: a DID rings its user's SIP phone (then the forward number), and a SIP user's
call goes out to the PSTN trunk with the user's DID as caller ID.

Channel limits: one call at a time per user, plus the account's extra channels, counted over all
nodes (callctl.lines.slots: a slot per call in PostgreSQL, taken atomically; see docs/lines.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from callctl.calls.port import Authorization, CallPort, DialHooks, DialOutcome
from callctl.cdr.record import answered_seconds
from callctl.errors import StoreError
from callctl.flows.model import Dialplan, normalise_called
from callctl.lines.slots import ChannelLimits, LocalChannelLimits
from callctl.logging import get_logger
from callctl.numbers import e164_or_none, to_e164

log = get_logger("callctl.lines")

TRUNK = "pstn"
RING_TIMEOUT_S = 25.0
UNAVAILABLE = ["sound:vm-nobodyavail"]
INVALID_NUMBER = ["sound:ss-noservice"]
NO_CREDIT = ["sound:cannot-complete-as-dialed"]
GATED = ["sound:cannot-complete-as-dialed"]
EMERGENCY_PIDF_TRUNK = "emergency-pidf"  # the same gateway, with the location as PIDF-LO


class LineUserLike(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def account_id(self) -> uuid.UUID: ...
    @property
    def sip_username(self) -> str: ...
    @property
    def forward_to(self) -> str | None: ...
    @property
    def country(self) -> str: ...
    @property
    def numbers(self) -> tuple[str, ...]: ...
    @property
    def suspended(self) -> bool: ...
    @property
    def recording(self) -> bool: ...

    @property
    def channel_limit(self) -> int: ...


class FraudScreen(Protocol):
    """Destination permissions and spend limits before an outbound leg (issue 20: the fraud screen,
    callctl.fraud.service.FraudService, wired by app.py)."""

    async def refuse_line_call(self, call: CallPort, user: LineUserLike, number: str,
                               auth: Authorization | None) -> str | None:
        """None: dial it; else the call was refused (told and hung up) and this is its outcome."""

    async def forward_allowed(self, call: CallPort, user: LineUserLike, number: str) -> bool: ...


class Billing(Protocol):
    """Prepaid authorisation before an outbound call and settlement after it (callctl.billing.service)."""

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization: ...

    # auth: Any, as each billing service takes back only the authorisation type its own authorize made.
    async def finish(self, auth: Any, billed_seconds: int) -> dict[str, Any]:
        """Settle the call (debit its true cost); returns the CDR rating columns of the dialled leg."""
        ...


class GateDecision(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def emergency(self) -> bool: ...
    @property
    def rule(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def location(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...


# Decides before anything else whether a call may leave (callctl.gating.service.decide).
Gate = Callable[["LineUserLike", str, str], Awaitable[GateDecision]]


class CallRecording(Protocol):
    @property
    def hooks(self) -> DialHooks: ...
    async def finish(self) -> None: ...


class Recorder(Protocol):
    """Automatic recording of an account's calls (callctl.recording.calls.LineRecorder)."""

    def for_call(self, call_id: str, account_id: uuid.UUID, account_country: str, remote_number: str, *,
                 remote_is_caller: bool) -> CallRecording: ...


@dataclass(frozen=True)
class LineLookups:
    user_for_did: Callable[[str], Awaitable[LineUserLike | None]]
    user_for_endpoint: Callable[[str], Awaitable[LineUserLike | None]]


def endpoint_of(channel_name: str) -> str:
    """'PJSIP/alice-0000002a' -> 'alice' (the endpoint that placed the call)."""
    tech, _, rest = channel_name.partition("/")
    return rest.rsplit("-", 1)[0] if tech and rest else ""


class LineService:
    fraud: FraudScreen | None = None  # set by app.py

    def __init__(self, lookups: LineLookups, limits: ChannelLimits | None = None, *,
                 ring_timeout_s: float = RING_TIMEOUT_S, billing: Billing | None = None,
                 gate: Gate | None = None, recorder: Recorder | None = None) -> None:
        self._lookups = lookups
        self._recorder = recorder
        self._billing = billing
        self._gate = gate
        self.limits: ChannelLimits = limits or LocalChannelLimits()
        self._ring_timeout_s = ring_timeout_s

    async def user_for_did(self, number: str) -> LineUserLike | None:
        return await self._lookups.user_for_did(number)

    async def user_for_endpoint(self, endpoint: str) -> LineUserLike | None:
        return await self._lookups.user_for_endpoint(endpoint)

    # -- the router's handlers (callctl.router) ---------------------------------------------------

    async def take_did(self, call: CallPort, plan: Dialplan) -> str | None:
        """A call to a business-line DID rings its user; None when the number is no user's."""
        user = await self._did_user(call.called)
        if user is None:
            return None
        call.country = user.country
        call.result.flow = "line-inbound"
        return await self.inbound(call, user)

    async def take_outbound(self, call: CallPort, plan: Dialplan) -> str:
        """A SIP user calling out (extensions.conf [from-users] passes ``line-outbound``)."""
        call.result.flow = "line-outbound"
        return await self.outbound(call, endpoint_of(call.channel_name))

    async def take_resumed(self, call: CallPort, plan: Dialplan) -> str:
        """A two-party call a previous engine bridged, found up at a resync."""
        assert call.resumed is not None
        endpoint = endpoint_of(call.channel_name)
        try:
            user = await self.user_for_endpoint(endpoint) if endpoint else None
        except StoreError as exc:
            log.error("line_lookup_failed", error=exc.message)
            user = None
        outbound = user is not None
        if user is None:  # not placed by a SIP user: a call to one of the users' numbers
            user = await self._did_user(call.called)
        call.result.flow = "line-outbound" if outbound else "line-inbound"
        return await self.resume(call, user, outbound=outbound, leg_endpoint=endpoint_of(call.resumed[0].name))

    async def _did_user(self, called: str) -> LineUserLike | None:
        try:
            return await self.user_for_did(normalise_called(called))
        except StoreError as exc:
            log.error("line_lookup_failed", error=exc.message)
            return None

    def _tag(self, call: CallPort, user: LineUserLike) -> None:
        call.result.account_id, call.result.user_id = str(user.account_id), str(user.user_id)

    def _recording(self, call: CallPort, user: LineUserLike, remote_number: str, *,
                   remote_is_caller: bool) -> CallRecording | None:
        if self._recorder is None or not user.recording:
            return None
        return self._recorder.for_call(str(call.call_id), user.account_id, user.country,
                                       remote_number, remote_is_caller=remote_is_caller)

    @staticmethod
    def _hooks(recording: CallRecording | None) -> DialHooks | None:
        return recording.hooks if recording is not None else None

    async def inbound(self, call: CallPort, user: LineUserLike) -> str:
        """A call to one of ``user``'s numbers; recorded when the account has the option."""
        recording = self._recording(call, user, call.caller, remote_is_caller=True)
        try:
            return await self._inbound(call, user, recording)
        finally:
            if recording is not None:
                await recording.finish()

    async def _inbound(self, call: CallPort, user: LineUserLike, recording: CallRecording | None) -> str:
        """A call to one of ``user``'s numbers: ring the phone, then forward, else a message."""
        self._tag(call, user)
        if user.suspended:
            log.info("line_call_refused", reason="account suspended")
            call.result.extra["refused"] = "account_suspended"
            await call.hang_up("unallocated")
            return "account_suspended"
        if not await self.limits.take(user, call.channel_id):
            log.info("line_user_busy", reason="channel_limit", limit=user.channel_limit)
            outcome = DialOutcome("busy", 17)
        else:
            try:
                outcome = await call.dial(f"PJSIP/{user.sip_username}", timeout_s=self._ring_timeout_s,
                                          caller_id=call.caller or None, hooks=self._hooks(recording))
            finally:
                await self.limits.release(user, call.channel_id)
        if outcome.status == "answered":
            return "answered"
        log.info("line_not_answered", status=outcome.status, forward=bool(user.forward_to))
        if user.forward_to and (self.fraud is None or await self.fraud.forward_allowed(call, user, user.forward_to)):
            forwarded = await call.dial(f"PJSIP/{user.forward_to}@{TRUNK}", timeout_s=self._ring_timeout_s,
                                        caller_id=call.caller or None, hooks=self._hooks(recording))
            call.result.extra["forwarded"] = forwarded.status
            if forwarded.status == "answered":
                return "forwarded"
        await call.answer()
        await call.play(UNAVAILABLE, interruptible=False)
        await call.hang_up("normal")
        return f"unavailable_{outcome.status}"

    async def resume(self, call: CallPort, user: LineUserLike | None, *, outbound: bool, leg_endpoint: str) -> str:
        """A two-party call a previous engine bridged, found up after a restart: tagged with its user as
        the first engine did, kept up until either side hangs up (no re-routing, no second dial). Its
        credit hold is settled from its real seconds when it ends (the supervisor's sweep)."""
        if user is not None:
            self._tag(call, user)
            call.country = user.country
        caller_id = user.numbers[0] if outbound and user is not None and user.numbers else None
        if outbound:
            target = f"PJSIP/{to_e164(call.called, user.country if user else None)}@{TRUNK}"
        else:
            target = f"PJSIP/{leg_endpoint}"
        log.info("line_call_resumed", outbound=outbound, known_user=user is not None)
        # It uses one of the user's channels (the slot it held is taken again: same channel, same node).
        counted = user is not None and outbound and await self.limits.take(user, call.channel_id)
        # A recorded call stays recorded by the recording already running, objection key included.
        recording = None if user is None else self._recording(
            call, user, call.caller if not outbound else to_e164(call.called, user.country),
            remote_is_caller=not outbound)
        try:
            outcome = await call.resume_bridged(target, caller_id=caller_id, hooks=self._hooks(recording))
        finally:
            if counted and user is not None:
                await self.limits.release(user, call.channel_id)
            if recording is not None:
                await recording.finish()
        return f"resumed_{outcome.status}"

    async def outbound(self, call: CallPort, endpoint: str) -> str:
        """A call placed by a SIP user: normalise, check the channel limit, dial the trunk."""
        user = await self._lookups.user_for_endpoint(endpoint)
        if user is None:
            log.warning("line_unknown_endpoint", endpoint=endpoint)
            await call.hang_up("rejected")
            return "unknown_user"
        self._tag(call, user)
        caller_id = user.numbers[0] if user.numbers else None
        if self._gate is not None:
            # First, before credit, channel limits or compliance: an emergency call is classified by
            # the caller's country and, when allowed, routed at once, free, never blocked.
            decision = await self._gate(user, caller_id or "", call.called)
            if decision.emergency:
                return await self._emergency(call, decision, caller_id, user.country)
            if not decision.allowed:
                log.warning("line_call_gated", rule=decision.rule, reason=decision.reason)
                call.result.extra["refused"] = decision.rule
                await call.answer()
                await call.play(GATED, interruptible=False)
                await call.hang_up("normal")
                return f"gated_{decision.rule}"
        if user.suspended:
            log.warning("line_call_refused", reason="account suspended")
            call.result.extra["refused"] = "account_suspended"
            await call.hang_up("rejected")
            return "account_suspended"
        number = e164_or_none(call.called, user.country)
        if number is None:
            log.info("line_invalid_number", dialled_len=len(call.called))
            await call.answer()
            await call.play(INVALID_NUMBER, interruptible=False)
            await call.hang_up("unallocated")
            return "invalid_number"
        if not await self.limits.take(user, call.channel_id):
            log.info("line_user_busy", reason="channel_limit", limit=user.channel_limit)
            call.result.extra["refused"] = "channel_limit"
            await call.hang_up("busy")
            return "channel_limit"
        try:
            auth = None
            if self._billing is not None:
                auth = await self._billing.authorize(user.account_id, caller_id or "", number, user_id=user.user_id,
                                                     channel_id=call.channel_id)
                if not auth.allowed:
                    log.info("line_call_refused", reason=auth.reason)
                    call.result.extra["refused"] = auth.reason or "not authorised"
                    await call.answer()
                    await call.play(NO_CREDIT, interruptible=False)
                    await call.hang_up("normal")
                    return "not_authorised"
            if self.fraud is not None:  # issue 20: permissions and spend limits, before the leg is dialled
                refused = await self.fraud.refuse_line_call(call, user, number, auth)
                if refused is not None:
                    if auth is not None and self._billing is not None:
                        await self._billing.finish(auth, 0)  # its hold is given back
                    return str(refused)
            recording = self._recording(call, user, number, remote_is_caller=False)
            try:
                outcome = await call.dial(f"PJSIP/{number}@{TRUNK}", timeout_s=60.0, caller_id=caller_id,
                                          max_talk_s=float(auth.max_seconds) if auth is not None else None,
                                          hooks=self._hooks(recording))
            finally:
                if recording is not None:
                    await recording.finish()
                if auth is not None and self._billing is not None:
                    leg = call.legs[-1] if call.legs else None
                    lc = leg.lifecycle if leg is not None else None
                    seconds = answered_seconds(lc.answered_at, lc.ended_at) if lc and lc.ended_at else 0
                    rating = await self._billing.finish(auth, seconds)
                    if leg is not None:  # the cost is on the dialled leg's CDR only (its `cost` column)
                        leg.rating.update(rating)
        finally:
            await self.limits.release(user, call.channel_id)
        if outcome.status != "answered":
            await call.hang_up({"busy": "busy", "congestion": "congestion"}.get(outcome.status, "normal"))
        return f"dialled_{outcome.status}"

    async def _emergency(self, call: CallPort, decision: GateDecision, callback: str | None, country: str) -> str:
        call.result.extra["emergency"] = True
        if not decision.allowed:
            log.warning("emergency_call_refused", rule=decision.rule, reason=decision.reason)
            call.result.disposition = "EMERGENCY_REFUSED"
            call.result.extra["refused"] = decision.rule
            await call.answer()
            lang = decision.language or call.language  # the line's country, as the dialplan does
            lang = lang if lang in ("en", "fr") else "en"
            await call.play([f"sound:callctl/{lang}/emergency-unavailable"], interruptible=False)
            await call.hang_up("normal")
            return "emergency_refused"
        log.warning("emergency_call", rule=decision.rule)
        # The location on file travels in a header the emergency gateway reads; the callback number
        # is the user's DID (caller ID).
        try:
            # The emergency-pidf endpoint (same gateway) also sends the location as a PIDF-LO body
            # (asterisk-conf/geolocation.conf reads these two variables), as the engine-down path does.
            location = decision.location or "unknown"
            outcome = await call.dial(f"PJSIP/{call.called}@{EMERGENCY_PIDF_TRUNK}", timeout_s=120.0,
                                      caller_id=callback, headers={"X-Callctl-Location": location},
                                      variables={"CALLCTL_LOCATION_OUT": location, "CALLCTL_PIDF_COUNTRY": country})
        finally:
            if call.legs:  # free of charge, however it ends: the leg's CDR says so (statements list it at 0)
                call.legs[-1].rating.update({"cost": Decimal(0), "included": True})
        return f"emergency_{outcome.status}"
