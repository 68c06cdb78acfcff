"""Emergency calls Asterisk decided alone while the engine was unavailable: their CDRs, built from the
row the dialplan wrote and the calls' channel events, handed to the CDR writer once each."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal

from callctl.cdr.record import LEG_NAMESPACE, CdrRecord
from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.numbers import to_e164
from callctl.store import gating as store
from callctl.store.gating import AsteriskEmergencyCall, ChannelEvents

log = get_logger("callctl.gating")

NO_EVENTS_GRACE = dt.timedelta(minutes=10)  # no channel event by then: Asterisk writes none (CEL off)
GIVE_UP_AFTER = dt.timedelta(days=1)  # an end never recorded (cel_pgsql drops events while PostgreSQL is down)
RETRY_S = 30.0  # calls still up when the engine came back are looked at again this often
REASON = "decided by Asterisk while the engine was unavailable"


def caller_leg_id(call: AsteriskEmergencyCall) -> uuid.UUID:
    """The CDR leg id of the calling channel: from the row alone, so a replay or a second pass never
    writes it twice."""
    return uuid.uuid5(LEG_NAMESPACE, f"asterisk-emergency/{call.id}")


def dialled_leg_id(call: AsteriskEmergencyCall, uniqueid: str) -> uuid.UUID:
    return uuid.uuid5(LEG_NAMESPACE, f"asterisk-emergency/{call.id}/{uniqueid}")


def cdr_ready(call: AsteriskEmergencyCall, now: dt.datetime) -> bool:
    """Whether the call is over as far as its records can tell (its channels' ends are recorded)."""
    age = now - call.decided_at
    if call.uniqueid is None or age > GIVE_UP_AFTER:
        return True
    if not call.channels:
        return age > NO_EVENTS_GRACE
    return all(c.ended_at is not None for c in call.channels)


def emergency_cdrs(call: AsteriskEmergencyCall) -> list[CdrRecord]:
    """The CDRs of one such call: its calling channel (inbound), then each channel it dialled (outbound).
    Times from the channel events when recorded (else the decision's time); a routed call costs 0 and
    is included (like the engine's emergency legs); a refused one is EMERGENCY_REFUSED with its rule."""
    country = call.account_country
    routed = call.decision == "allow"
    own = next((c for c in call.channels if c.uniqueid == call.uniqueid), None)
    first = caller_leg_id(call)
    extra = {"emergency": True, "decided_by": "asterisk", "endpoint": call.endpoint, "asterisk_call": call.id}
    records = [_record(call, own, leg_id=first, call_id=first, direction="inbound",
                       channel_id=call.uniqueid or "", from_number=to_e164(call.caller, country),
                       to_number=to_e164(call.callee, country),
                       disposition=None if routed else "EMERGENCY_REFUSED",
                       extra={**extra, "outcome": "emergency_routed" if routed else "emergency_refused",
                              **({} if routed else {"refused": call.rule})},
                       free=routed)]
    for channel in call.channels:
        if channel.uniqueid != call.uniqueid:
            records.append(_record(call, channel, leg_id=dialled_leg_id(call, channel.uniqueid), call_id=first,
                                   direction="outbound", channel_id=channel.uniqueid,
                                   from_number=to_e164(call.caller, country), to_number=to_e164(call.callee, country),
                                   disposition=None, extra={**extra, "target": channel.channel}, free=True))
    return records


def _record(call: AsteriskEmergencyCall, events: ChannelEvents | None, *, leg_id: uuid.UUID, call_id: uuid.UUID,
            direction: str, channel_id: str, from_number: str, to_number: str, disposition: str | None,
            extra: dict[str, object], free: bool) -> CdrRecord:
    started = (events.started_at if events else None) or call.decided_at
    answered = events.answered_at if events else None
    ended = max((events.ended_at if events else None) or call.decided_at, answered or started, started)
    reason = REASON if disposition is None else f"emergency call refused ({call.rule}), {REASON}"
    return CdrRecord(
        leg_id=leg_id, call_id=call_id, direction=direction, from_number=from_number, to_number=to_number,
        started_at=started, answered_at=answered, ended_at=ended,
        disposition=disposition or ("ANSWERED" if answered else "NO ANSWER"), hangup_cause=None,
        hangup_reason=reason, channel_id=channel_id, account_id=call.account_id, extra=dict(extra),
        cost=Decimal(0) if free else None, included=True if free else None)


async def write_pending(pool: object, submit: Callable[[CdrRecord], None],
                        now: dt.datetime | None = None) -> tuple[int, int]:
    """One pass: hand the CDRs of every finished call to ``submit`` (the CDR writer, idempotent by leg
    id), then mark those calls. Returns (calls written, calls still waiting for their end)."""
    calls = await store.emergency_calls_without_cdr(pool)
    now = now or dt.datetime.now(dt.UTC)
    done = [c for c in calls if cdr_ready(c, now)]
    for call in done:
        for record in emergency_cdrs(call):
            submit(record)
    if done:
        # After the submits: a crash in between writes them again next time, under the same leg ids.
        await store.emergency_cdrs_written(pool, [c.id for c in done])
    return len(done), len(calls) - len(done)


async def write_emergency_cdrs(pool: object, submit: Callable[[CdrRecord], None], *,
                               retry_s: float = RETRY_S) -> None:
    """After each (re)connect: write the CDRs of the emergency calls Asterisk decided alone; calls still
    up are looked at again every ``retry_s`` until none is left."""
    while True:
        try:
            written, waiting = await write_pending(pool, submit)
        except StoreError as exc:
            log.warning("asterisk_emergency_cdrs_failed", error=exc.message)
            return
        if written:
            log.info("asterisk_emergency_cdrs_written", calls=written, waiting=waiting)
        if not waiting:
            return
        await asyncio.sleep(retry_s)
