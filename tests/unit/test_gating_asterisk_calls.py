"""CDRs of emergency calls Asterisk decided alone (pure part; the real calls: test_gating_asterisk)."""

from __future__ import annotations

import datetime as dt

from callctl.gating.asterisk_calls import GIVE_UP_AFTER, NO_EVENTS_GRACE, cdr_ready, emergency_cdrs
from callctl.store.gating import AsteriskEmergencyCall, ChannelEvents

AT = dt.datetime(2026, 5, 4, 10, 0, tzinfo=dt.UTC)
ACCOUNT = "6f1c3c9e-3d3b-4c39-9a57-0c7a4f1e2d10"


def _call(decision: str, uniqueid: str | None, *channels: ChannelEvents) -> AsteriskEmergencyCall:
    return AsteriskEmergencyCall(7, AT, ACCOUNT, "FR", "alice", "0170000001", "15", decision,
                                 "emergency_allowed" if decision == "allow" else "emergency_not_enabled",
                                 uniqueid, channels)


def _events(uniqueid: str, answered_s: float | None, ended_s: float | None) -> ChannelEvents:
    return ChannelEvents(uniqueid, f"PJSIP/{uniqueid}", AT, answered_s and AT + dt.timedelta(seconds=answered_s),
                         None if ended_s is None else AT + dt.timedelta(seconds=ended_s))


def test_a_call_is_written_once_its_channels_have_ended_or_when_no_events_can_come() -> None:
    up = _call("allow", "1.1", _events("1.1", 1, None))
    assert not cdr_ready(up, AT + dt.timedelta(minutes=5))
    assert cdr_ready(up, AT + GIVE_UP_AFTER + dt.timedelta(seconds=1))  # an end that was never recorded
    assert cdr_ready(_call("allow", "1.1", _events("1.1", 1, 9), _events("1.2", 1, 9)), AT + dt.timedelta(seconds=10))
    silent = _call("allow", "1.1")  # Asterisk without channel events
    assert not cdr_ready(silent, AT + dt.timedelta(minutes=1))
    assert cdr_ready(silent, AT + NO_EVENTS_GRACE + dt.timedelta(seconds=1))
    assert cdr_ready(_call("deny", None), AT)  # written before the uniqueid existed (migration 0010)


def test_a_routed_call_has_free_legs_with_ids_from_its_row_and_times_from_its_events() -> None:
    call = _call("allow", "1.1", _events("1.1", 2.5, 30.25), _events("1.2", 2.4, 30.2))
    inbound, outbound = emergency_cdrs(call)
    assert emergency_cdrs(call) == [inbound, outbound]  # deterministic: a second pass writes nothing new
    assert (inbound.direction, inbound.channel_id, inbound.from_number, inbound.to_number) == \
        ("inbound", "1.1", "+33170000001", "15")
    assert (outbound.direction, outbound.channel_id, outbound.call_id) == ("outbound", "1.2", inbound.leg_id)
    assert [(r.disposition, r.cost, r.included, r.billed_s) for r in (inbound, outbound)] == \
        [("ANSWERED", 0, True, 28), ("ANSWERED", 0, True, 28)]
    assert inbound.account_id == ACCOUNT and inbound.extra["decided_by"] == "asterisk"


def test_a_refused_call_without_events_is_dated_by_its_decision() -> None:
    [cdr] = emergency_cdrs(_call("deny", None))
    assert (cdr.disposition, cdr.extra["refused"], cdr.cost) == ("EMERGENCY_REFUSED", "emergency_not_enabled", None)
    assert cdr.started_at == cdr.ended_at == AT and cdr.answered_at is None and cdr.channel_id == ""
