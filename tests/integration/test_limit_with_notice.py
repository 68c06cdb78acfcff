"""A prepaid call's limit counts from the answer even when a notice plays at answer (the recording notice):
Asterisk carries out a channel command (set_var of TIMEOUT(absolute)) only once the channel is free, so a
limit set after the notice started late by the notice's length. Real Asterisk, SIPp on both sides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration import test_lines_calls as lines
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_cli import cli, run_cli
from tests.support import sipp
from tests.support.asterisk import render_prompts

pytestmark = pytest.mark.integration

asterisk = lines.asterisk  # this module's Asterisk reads SIP users from the test's database


def recorded_prepaid_user(database_url: str, credit: str) -> dict[str, Any]:
    """A SIP user whose account records its calls (a notice to both parties at answer) and has ``credit``
    EUR at 0.60 EUR/min to France."""
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR", "--recording")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", lines.DID)
    user["account_id"] = acc["id"]
    deck = Path(os.environ.get("TMPDIR", "/tmp")) / f"deck-{acc['id']}.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,2,0.60,EUR\n")
    assert run_cli(database_url, "rates", "import", str(deck), "--deck", "test").returncode == 0
    assert run_cli(database_url, "credit", "add", "--account", acc["id"], credit).returncode == 0
    return user


def test_a_prepaid_call_with_a_recording_notice_at_answer_ends_at_its_limit_counted_from_the_answer(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    render_prompts(asterisk)
    user = recorded_prepaid_user(database_url, "0.06")  # 0.60 EUR/min: 6 s of talk
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, "0123456789", [("wait_bye", None)], caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=lines.PHONE_IP,
                           bye_timeout_s=40)
    d.wait_for_log("recording_started", 20)  # both parties heard the notice (about 5 s) first
    assert sipp.finish(*far).ok  # cut by Asterisk at the limit: the far end got a BYE
    assert sipp.finish(*call).ok
    rows = wait_for_cdrs(database_url, 2)
    outbound = next(r for r in rows if r["direction"] == "outbound")
    # Billed from the leg's answer to its end. Asterisk starts counting the limit when it applies it, one
    # REST round trip (milliseconds) after the engine saw the answer, and billing rounds up to the whole
    # second: 6 s of limit bill 6 or 7 s, never the notice's length more.
    assert 6 <= outbound["billed_s"] <= 7, outbound["billed_s"]
    assert not d.tracebacks()
