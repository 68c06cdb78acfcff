"""The fraud screen on real calls: a SIP user (SIPp on 127.0.0.2, realtime from PostgreSQL) calling out
through a real Asterisk and engine; SIPp plays the PSTN far end."""

from __future__ import annotations

import email
import email.policy
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.asterisk import render_prompts, wait_for

pytestmark = pytest.mark.integration

PHONE_IP = "127.0.0.2"
DID = "+33170000001"


@pytest.fixture
def asterisk(database_url: str) -> Iterator[AsteriskInstance]:
    """Overrides the session Asterisk for this module: realtime users from this test's database."""
    ensure_root()
    inst = AsteriskInstance(f"fraud-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=31400, rtp_end=31599, trunk_port=free_port_pair(),
                            emergency_port=free_port_pair())
    inst.use_database(database_url)
    inst.start()
    render_prompts(inst)  # destination-barred / outbound-suspended
    try:
        yield inst
    finally:
        inst.stop()


def line_user(database_url: str, tmp_path: Path, *, rate: str, credit: str, extra_channels: int = 0
              ) -> dict[str, Any]:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR",
              "--extra-channels", str(extra_channels))
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", DID)
    user["account_id"] = acc["id"]
    deck = tmp_path / "deck.csv"
    deck.write_text(f"prefix,destination,zone,rate_per_minute,currency\n33,France,2,{rate},EUR\n")
    assert run_cli(database_url, "rates", "import", str(deck), "--deck", "test").returncode == 0
    assert run_cli(database_url, "credit", "add", "--account", acc["id"], credit).returncode == 0
    return user


def test_a_premium_number_is_refused_with_an_announcement_and_a_cdr_naming_the_rule_until_allowed(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    user = line_user(database_url, tmp_path, rate="0.60", credit="10")
    d = daemon_factory()
    d.wait_until_ready()
    auth = (user["sip_username"], user["sip_password"])
    # 08 99 ...: a French premium-rate number; nothing is listening on the trunk: nothing may leave.
    result = sipp.call(asterisk.sip_port, "0899123456", [("wait_bye", None)], caller=user["sip_username"],
                       auth=auth, local_ip=PHONE_IP)
    assert result.ok, result.stderr
    assert result.talk_s() > 3  # the announcement, not silence
    assert (asterisk.sounds_dir / "callctl/fr/destination-barred.wav").exists()
    refused = d.wait_for_log("fraud_call_refused")
    assert (refused["rule"], refused["path"]) == ("destination_premium_barred", "line")
    [row] = wait_for_cdrs(database_url, 1)
    assert row["disposition"] == "FRAUD_DESTINATION_PREMIUM_BARRED"
    extra = json.loads(row["extra"])
    assert extra["refused"] == "destination_premium_barred" and "premium-rate" in extra["fraud_reason"]
    [rec] = db(database_url, "SELECT path, destination, rule FROM fraud_refusal")
    assert (rec["path"], rec["destination"], rec["rule"]) == ("line", "+33899123456", "destination_premium_barred")
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert (credit["balance"], credit["reserved"]) == (10, 0)  # its hold was given back, nothing debited

    # An operator allows premium numbers for this account (audited): the same call now leaves.
    changed = cli(database_url, "fraud", "permissions", user["account_id"], "--premium", "--by", "ops-alice")
    assert (changed["before"]["premium"], changed["after"]["premium"]) == (False, True)
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    result = sipp.call(asterisk.sip_port, "0899123456", [("pause", 1000), ("bye", None)],
                       caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
    assert result.ok, result.stderr
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    shown = cli(database_url, "fraud", "show", user["account_id"])
    assert shown["permissions"]["premium"] is True and shown["permissions"]["scope"] == "account"
    [audit] = [a for a in shown["audit"] if a["what"] == "permissions"]
    assert audit["by"] == "ops-alice" and audit["before"]["premium"] is False and audit["after"]["premium"] is True
    assert shown["refusals"][0]["rule"] == "destination_premium_barred"
    assert not d.tracebacks()


def test_parallel_calls_over_the_hourly_limit_are_refused_and_the_account_is_suspended_until_released(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    # 1.20 EUR/min and plenty of credit: each call holds its 4-hour maximum, 288 EUR, and can spend at most
    # 72 EUR in any hour. With a 150 EUR hourly limit, calls are admitted while what was spent, and what the
    # calls still up can spend within the hour, is under 150: 0, 72, 144, then refused.
    user = line_user(database_url, tmp_path, rate="1.20", credit="2000", extra_channels=9)  # 6 holds fit
    limits = cli(database_url, "fraud", "limits", user["account_id"], "--hour", "150", "--day", "5000", "--contact",
                 "billing@acme.example", "--by", "ops-bob")
    assert limits["after"]["hour"] == "150"
    outbox = tmp_path / "outbox"
    far = sipp.start_far_end(asterisk.trunk_port, "hang_up", calls=3, talk_ms=4000)
    d = daemon_factory(outbox_dir=str(outbox))
    d.wait_until_ready()
    # Six calls at once from the same (stolen) credentials.
    result = sipp.call(asterisk.sip_port, "0123456789", [("wait_bye", None)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP, calls=6, rate=100,
                       concurrent=6)
    assert result.ok, result.stderr
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    assert sum("INVITE sip:" in text for _at, text in far_result.messages) == 3  # three calls left, no more
    rows = wait_for_cdrs(database_url, 3 * 2 + 3)  # 3 bridged calls (two legs each), 3 refused
    refused = [r for r in rows if r["disposition"].startswith("FRAUD_")]
    assert sorted(r["disposition"] for r in refused) == ["FRAUD_OUTBOUND_SUSPENDED"] * 2 + ["FRAUD_SPEND_HOUR_LIMIT"]
    # The money of the hour: never more than the limit plus one call's (hour of) hold.
    admitted = db(database_url, "SELECT r.amount, r.cost FROM fraud_admission a JOIN credit_reservation r "
                                "ON r.id = a.reservation_id")
    assert [a["amount"] for a in admitted] == [Decimal("288.0000")] * 3
    assert sum(min(a["amount"], Decimal(72)) for a in admitted) <= Decimal(150) + Decimal(72)
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert credit["reserved"] == 0 and credit["balance"] == 2000 - sum(a["cost"] for a in admitted)
    suspended = d.wait_for_log("fraud_account_suspended")
    assert suspended["rule"] == "spend_hour_limit"
    warned = d.wait_for_log("fraud_threshold_warning")  # 72 + 72 at risk: over 80 % of 150 EUR
    assert warned["rule"] == "spend_hour_limit"
    mails = wait_for(lambda: [m for m in outbox.glob("*-fraud-*.eml")][1:] and sorted(outbox.glob("*-fraud-*.eml")),
                     10, "the two fraud alert e-mails")
    parsed = [email.message_from_bytes(m.read_bytes(), policy=email.policy.default) for m in mails]
    subjects = {str(m["Subject"]).split(": ", 1)[1]: m for m in parsed}
    assert set(subjects) == {"outbound calls suspended (spend_hour_limit)", "spending warning (spend_hour_limit)"}
    suspension = subjects["outbound calls suspended (spend_hour_limit)"]
    assert suspension["To"] == "billing@acme.example"
    assert f"callctl fraud release {user['account_id']}" in suspension.get_content()  # type: ignore[attr-defined]
    _, metrics = d.get("/metrics")
    assert "callctl_fraud_suspensions_total 1.0" in metrics

    shown = cli(database_url, "fraud", "show", user["account_id"])
    assert shown["suspended"]["rule"] == "spend_hour_limit"
    released = cli(database_url, "fraud", "release", user["account_id"], "--by", "ops-bob", "--note", "customer ok")
    assert released["released"]["released_by"] == "ops-bob"
    assert run_cli(database_url, "fraud", "release", user["account_id"]).returncode == 1  # not suspended any more
    shown = cli(database_url, "fraud", "show", user["account_id"])
    assert shown["suspended"] is None and shown["usage"]["spent_hour"] == "0"  # counting starts again
    assert [a["what"] for a in shown["audit"]][:3] == ["release", "suspension", "limits"]
    assert not d.tracebacks()


def test_a_did_is_not_forwarded_to_a_barred_destination(daemon_factory: Any, asterisk: AsteriskInstance,
                                                         database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", DID,
               "--forward", "+33899123456")  # a premium-rate number: the forward would cost the account
    port = free_port_pair()
    db(database_url, "UPDATE ps_aors SET contact=$1 WHERE id=$2", f"sip:{user['sip_username']}@{PHONE_IP}:{port}",
       user["sip_username"])
    phone = sipp.start_far_end(port, "busy", local_ip=PHONE_IP)
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, DID, [("wait_bye", None)], caller="0612345678")
    assert result.ok, result.stderr  # "nobody is available", then the engine hung up
    assert sipp.finish(*phone).ok
    refused = d.wait_for_log("fraud_call_refused")
    assert (refused["path"], refused["rule"]) == ("forward", "destination_premium_barred")
    rows = wait_for_cdrs(database_url, 2)  # the caller and the ringing of the phone; no forwarded leg
    inbound = next(r for r in rows if r["direction"] == "inbound")
    assert json.loads(inbound["extra"])["forward_refused"] == "destination_premium_barred"
    assert not [r for r in rows if r["to_number"] == "+33899123456"]
