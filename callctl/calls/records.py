"""Every CDR the engine writes is built here, from facts (pure, no I/O): a call's own leg, the legs it
dialled, and a call recovered from the open-calls journal after it ended with no engine connected."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callctl.calls.lifecycle import Lifecycle
from callctl.calls.result import CallResult, OutboundLeg
from callctl.cdr.record import CdrRecord
from callctl.numbers import to_e164

NOT_REPORTED = "end not reported by Asterisk"
# A call whose Asterisk went away (docs/scaling.md): it ended between the moment the ARI connection
# dropped (its ended_at: never bill more than certain) and the moment the engine gave it up.
ASTERISK_LOST = "Asterisk went away: ended when the ARI connection dropped"
VANISHED = "hung up while the ARI connection was down"  # found gone at the resync; ended at the drop


@dataclass(frozen=True)
class CallFacts:
    """What the supervisor knows of a finished call besides its result tags."""

    call_id: str
    channel_id: str
    caller: str
    called: str
    country: str | None
    outcome: str


def ensure_ended(lc: Lifecycle, now: dt.datetime) -> dt.datetime:
    """The leg's end; ``now`` when Asterisk never reported it."""
    if lc.ended_at is None:
        lc.ended(now, None, NOT_REPORTED)
    assert lc.ended_at is not None
    return lc.ended_at


def call_record(facts: CallFacts, lc: Lifecycle, result: CallResult, now: dt.datetime) -> CdrRecord:
    """The CDR of the call's own (first) leg; its id is the call's id."""
    ended_at = ensure_ended(lc, now)
    first_leg = uuid.UUID(facts.call_id)
    return CdrRecord(
        leg_id=first_leg, call_id=first_leg, direction=result.direction,
        from_number=to_e164(facts.caller, facts.country), to_number=to_e164(facts.called, facts.country),
        started_at=lc.started_at, answered_at=lc.answered_at, ended_at=ended_at,
        disposition=result.disposition or lc.disposition, hangup_cause=lc.hangup_cause,
        hangup_reason=lc.hangup_reason, channel_id=facts.channel_id, flow=result.flow,
        dialplan_version=result.dialplan_version,
        account_id=result.account_id, user_id=result.user_id, conference_id=result.conference_id,
        person=result.person, role=result.role,
        extra={"outcome": facts.outcome, "ended_by": lc.ended_by, **result.extra,
               **({"trace": result.trace.as_json()} if result.trace.steps else {}), **_incomplete(lc, now)},
        **result.rating.columns(),
    )


def leg_record(first: CdrRecord, leg: OutboundLeg, country: str | None, now: dt.datetime) -> CdrRecord:
    """The CDR of a leg the call dialled, linked to the call by ``call_id``."""
    lc = leg.lifecycle
    ended_at = ensure_ended(lc, now)
    dest = leg.target.split("/", 1)[-1].split("@", 1)[0]
    return CdrRecord(
        leg_id=uuid.UUID(leg.channel_id), call_id=first.call_id, direction="outbound",
        from_number=to_e164(leg.caller_id or first.to_number, country), to_number=to_e164(dest, country),
        started_at=lc.started_at, answered_at=lc.answered_at, ended_at=ended_at,
        disposition=lc.disposition, hangup_cause=lc.hangup_cause, hangup_reason=lc.hangup_reason,
        channel_id=leg.channel_id, flow=first.flow, dialplan_version=first.dialplan_version,
        account_id=first.account_id, user_id=first.user_id,
        extra={"target": leg.target, "ended_by": lc.ended_by, **_incomplete(lc, now)},
        **leg.rating.columns(),
    )


def _incomplete(lc: Lifecycle, now: dt.datetime) -> dict[str, Any]:
    """The marks of a leg whose true end is unknown (its Asterisk went away)."""
    if lc.hangup_reason not in (ASTERISK_LOST, VANISHED):
        return {}
    return {"incomplete": True, "ended_before": now.isoformat()}


def recovered_record(leg: str, entry: Mapping[str, Any], last_seen: dt.datetime | None,
                     now: dt.datetime) -> CdrRecord:
    """A call a previous engine took that ended while no engine was connected (its journal ``entry``).

    The end is unknown: after the previous engine's last sign of life, before now. The CDR takes the
    earlier bound (never bill more than certain) and keeps the later one in ``extra.ended_before``."""
    started = dt.datetime.fromisoformat(entry["started_at"])
    answered = dt.datetime.fromisoformat(entry["answered_at"]) if entry.get("answered_at") else None
    last_seen = last_seen or started
    return CdrRecord(
        leg_id=uuid.UUID(leg), call_id=uuid.UUID(entry.get("call", leg)), direction="inbound",
        from_number=to_e164(str(entry.get("caller", "")), None),
        to_number=to_e164(str(entry.get("called", "")), None),
        started_at=started, answered_at=answered, ended_at=max(last_seen, answered or started),
        disposition="ANSWERED" if answered else "NO ANSWER", hangup_cause=None,
        hangup_reason="ended while no engine was connected", channel_id=str(entry.get("channel", "")),
        extra={"outcome": "ended_without_engine", "incomplete": True, "ended_before": now.isoformat()},
    )

