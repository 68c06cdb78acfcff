"""Two-party business-line calls an engine restart finds up (issue 15, item 18): the resumed call still
warns the caller before its credit runs out, and a recorded call still obeys its objection key. Real
Asterisk with realtime SIP users, SIPp on both sides, the first engine killed with SIGKILL."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, free_port_pair
from tests.integration import test_lines_calls as lines
from tests.integration.test_lines_cli import db
from tests.integration.test_recording_lines import recorded_line_user
from tests.support import sipp
from tests.support.asterisk import render_prompts, wait_for

pytestmark = pytest.mark.integration

asterisk = lines.asterisk  # this module's Asterisk reads SIP users from the test's database


def _kill(d: Any) -> None:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)


def test_a_resumed_prepaid_call_still_hears_the_warning_before_its_limit(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    user = lines.line_user(database_url, credit="0.20")  # 0.60 EUR/min: 20 s
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, "0123456789", [("wait_bye", None)], caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=lines.PHONE_IP,
                           bye_timeout_s=40)
    wait_for(lambda: lines.limit_set(asterisk, user), 15, "the call to be up with its limit")
    _kill(d)
    restarted = daemon_factory()
    assert restarted.wait_for_log("line_call_resumed", 30)["outbound"] is True
    # The first engine would have beeped 10 s before the end; the second one does, from what Asterisk
    # says is left of the limit (never from the start: the call already ran for a while).
    restarted.wait_for_log("call_limit_warning", 20)
    assert sipp.finish(*far).ok  # cut by Asterisk at the limit
    assert sipp.finish(*call).ok
    assert not restarted.tracebacks()


def test_a_recorded_call_resumed_after_a_restart_still_obeys_the_objection_key(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    render_prompts(asterisk)
    user = recorded_line_user(database_url)
    port = free_port_pair()
    lines.phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "answer", local_ip=lines.PHONE_IP)
    d = daemon_factory()
    d.wait_until_ready()
    # The notice plays once both are bridged (~5 s); the engine dies; the caller presses 9 afterwards.
    caller = sipp.start_call(asterisk.sip_port, lines.DID, [("audio", 7.0), ("audio", 7.0), ("pause", 6000),
                                                            ("dtmf", "9"), ("pause", 2000), ("bye", None)],
                             caller="+442079460123")
    started = d.wait_for_log("recording_started", 20)
    _kill(d)
    restarted = daemon_factory()
    assert restarted.wait_for_log("line_call_resumed", 30)["outbound"] is False
    assert restarted.wait_for_log("recording_adopted", 10)["recording_id"] == started["recording_id"]
    objection = restarted.wait_for_log("recording_discarded", 30)
    assert (objection["rule"], objection["recording_id"]) == ("objection", started["recording_id"])
    assert sipp.finish(*caller).ok
    assert sipp.finish(*phone).ok
    [row] = db(database_url, "SELECT state, location FROM recording")
    assert (row["state"], row["location"]) == ("discarded", None)
    [notice] = db(database_url, "SELECT objection_key, objected_at FROM recording_notice WHERE party = 'remote'")
    assert notice["objection_key"] == "9" and notice["objected_at"] is not None
    spool = asterisk.host_dir / "spool" / "recording"
    assert not [p for p in spool.iterdir() if started["recording_id"] in p.name]
    assert not restarted.tracebacks()


def _requests_received(result: Any) -> list[str]:
    """The methods of the SIP requests SIPp received, in order."""
    methods = []
    for _at, text in result.messages:
        head, _, body = text.partition("\n")
        first = next((line for line in body.splitlines() if line.strip()), "")
        if "received" in head and not first.startswith("SIP/2.0"):
            methods.append(first.split(" ", 1)[0])
    return methods


def _user_channels(asterisk: AsteriskInstance, user: dict[str, Any]) -> list[str]:
    return [line.split("!", 1)[0] for line in asterisk.rx("core show channels concise", check=False).splitlines()
            if line.startswith(f"PJSIP/{user['sip_username']}-")]


def test_a_call_still_ringing_when_the_engine_dies_is_rung_again_once_and_nothing_is_left_unowned(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    """Issue 15, item 17: the first attempt is cancelled (the phone stops ringing) before the call is
    routed again; never two attempts at once, and no answered leg waits with nobody owning it."""
    user = lines.line_user(database_url)
    port = free_port_pair()
    lines.phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "cancelled_or_answer", ring_ms=6000, local_ip=lines.PHONE_IP, calls=2)
    d = daemon_factory()
    d.wait_until_ready()
    caller = sipp.start_call(asterisk.sip_port, lines.DID, [("pause", 3000), ("bye", None)], caller="0612345678")
    wait_for(lambda: _user_channels(asterisk, user), 15, "the user's phone to ring")
    _kill(d)
    restarted = daemon_factory()
    restarted.wait_for_log("abandoned_attempt_cancelled", 30)
    assert sipp.finish(*caller).ok  # answered by the second attempt, then the caller hung up
    phone_result = sipp.finish(*phone)
    assert phone_result.ok, phone_result.stderr
    received = _requests_received(phone_result)
    assert received.count("INVITE") == 2 and received.count("CANCEL") == 1, received
    assert received.index("CANCEL") < [i for i, m in enumerate(received) if m == "INVITE"][1]  # one at a time
    wait_for(lambda: not _user_channels(asterisk, user), 10, "no leg of the user's phone left in Asterisk")
    assert not restarted.events("orphan_leg_hung_up")
    assert not restarted.tracebacks()
