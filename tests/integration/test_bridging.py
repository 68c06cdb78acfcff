"""Two-party calls bridged by the engine: a SIPp caller, SIPp as the PSTN far end of the trunk."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration.test_daemon import wait_for_cdrs
from tests.support import sipp

pytestmark = pytest.mark.integration

PSTN_DEMO = "+33900000004"  # dialplan: dial +33123456789 through the "pstn" trunk


def test_a_call_is_bridged_to_the_pstn_and_both_legs_leave_linked_cdrs(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    far = sipp.start_far_end(asterisk.trunk_port, "answer", ring_ms=800)
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, PSTN_DEMO, [("audio", 0.1), ("pause", 3000), ("bye", None)],
                       caller="0612345678")
    assert result.ok, result.stderr
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    invite = next(text for _at, text in far_result.messages if "INVITE sip:" in text)
    assert "INVITE sip:+33123456789@" in invite
    assert "+33900000004" in invite.split("From:", 1)[1].splitlines()[0]  # the called number as caller id
    rows = wait_for_cdrs(database_url, 2)
    inbound = next(r for r in rows if r["direction"] == "inbound")
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert inbound["call_id"] == outbound["call_id"] and inbound["leg_id"] != outbound["leg_id"]
    assert outbound["to_number"] == "+33123456789" and outbound["disposition"] == "ANSWERED"
    assert inbound["disposition"] == "ANSWERED"
    talk = result.talk_s()
    assert abs((outbound["ended_at"] - outbound["answered_at"]).total_seconds() - talk) < 1.0
    # The caller was answered when the far end answered (no IVR answer first): ringing passed through.
    assert abs((inbound["answered_at"] - outbound["answered_at"]).total_seconds()) < 0.5
    assert d.wait_for_log("call_finished")["outcome"] == "caller_hung_up"


def test_a_busy_far_end_takes_the_flows_busy_branch(daemon_factory: Any, asterisk: AsteriskInstance,
                                                    database_url: str) -> None:
    far = sipp.start_far_end(asterisk.trunk_port, "busy")
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, PSTN_DEMO, [("wait_bye", None)])
    assert result.ok, result.stderr  # answered for the message, then the engine hung up
    assert sipp.finish(*far).ok
    rows = wait_for_cdrs(database_url, 2)
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert outbound["disposition"] == "BUSY" and outbound["hangup_cause"] == 17 and outbound["billed_s"] == 0
    assert d.wait_for_log("call_finished")["outcome"] == "hangup"


def test_the_far_end_hanging_up_first_ends_the_call_with_linked_cdrs(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    far = sipp.start_far_end(asterisk.trunk_port, "hang_up", talk_ms=2500)
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, PSTN_DEMO, [("wait_bye", None)])
    assert result.ok, result.stderr  # the caller got a BYE from the engine
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    rows = wait_for_cdrs(database_url, 2)
    inbound = next(r for r in rows if r["direction"] == "inbound")
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert inbound["call_id"] == outbound["call_id"]
    assert json.loads(outbound["extra"])["ended_by"] == "callee"
    assert abs((outbound["ended_at"] - outbound["answered_at"]).total_seconds() - 2.5) < 1.0
    assert abs((inbound["ended_at"] - outbound["ended_at"]).total_seconds()) < 1.0
