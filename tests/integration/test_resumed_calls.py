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
