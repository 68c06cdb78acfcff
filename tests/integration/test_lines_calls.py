"""Business-line calls on a real Asterisk whose SIP users come from PostgreSQL (realtime):
SIPp plays the user's phone (on 127.0.0.2, known only by its SIP user name) and the PSTN far end."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_cli import cli, db
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

PHONE_IP = "127.0.0.2"
DID = "+33170000001"
MOBILE = "+33611111111"


@pytest.fixture
def asterisk(database_url: str) -> Iterator[AsteriskInstance]:
    """Overrides the session Asterisk for this module: realtime users from this test's database."""
    ensure_root()
    inst = AsteriskInstance(f"calls-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=31100, rtp_end=31299, trunk_port=free_port_pair(),
                            emergency_port=free_port_pair())
    inst.use_database(database_url)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def line_user(database_url: str, *, extra_channels: int = 0, forward: str | None = None,
              credit: str | None = None) -> dict[str, Any]:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR",
              "--extra-channels", str(extra_channels))
    args = ["user", "add", "--account", acc["id"], "--name", "Alice", "--number", DID]
    if forward:
        args += ["--forward", forward]
    user = cli(database_url, *args)
    user["account_id"] = acc["id"]
    if credit is not None:
        deck = Path(os.environ.get("TMPDIR", "/tmp")) / f"deck-{acc['id']}.csv"
        deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,2,0.60,EUR\n")
        from tests.integration.test_lines_cli import run_cli
        assert run_cli(database_url, "rates", "import", str(deck), "--deck", "test").returncode == 0
        assert run_cli(database_url, "credit", "add", "--account", acc["id"], credit).returncode == 0
    return user


def phone_at(database_url: str, user: dict[str, Any], port: int) -> None:
    """The user's phone has a fixed address (as if registered): SIPp listening there."""
    db(database_url, "UPDATE ps_aors SET contact=$1 WHERE id=$2",
       f"sip:{user['sip_username']}@{PHONE_IP}:{port}", user["sip_username"])


def test_a_call_to_a_did_rings_the_users_phone_and_both_legs_are_linked(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    user = line_user(database_url)
    port = free_port_pair()
    phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "answer", local_ip=PHONE_IP)
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, DID, [("pause", 2500), ("bye", None)], caller="0612345678")
    assert result.ok, result.stderr
    assert sipp.finish(*phone).ok
    rows = wait_for_cdrs(database_url, 2)
    assert {r["direction"] for r in rows} == {"inbound", "outbound"}
    assert len({r["call_id"] for r in rows}) == 1
    assert {str(r["user_id"]) for r in rows} == {user["id"]} and rows[0]["flow"] == "line-inbound"


def test_no_answer_forwards_to_the_mobile_through_the_trunk(daemon_factory: Any, asterisk: AsteriskInstance,
                                                           database_url: str) -> None:
    user = line_user(database_url, forward=MOBILE)
    port = free_port_pair()
    phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "busy", local_ip=PHONE_IP)
    mobile = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, DID, [("pause", 2000), ("bye", None)])
    assert result.ok, result.stderr
    assert sipp.finish(*phone).ok
    mobile_result = sipp.finish(*mobile)
    assert mobile_result.ok, mobile_result.stderr
    invite = next(text for _at, text in mobile_result.messages if "INVITE sip:" in text)
    assert f"INVITE sip:{MOBILE}@" in invite
    rows = wait_for_cdrs(database_url, 3)
    outbound = sorted((r for r in rows if r["direction"] == "outbound"), key=lambda r: r["started_at"])
    assert [r["disposition"] for r in outbound] == ["BUSY", "ANSWERED"]


def test_an_outbound_national_number_reaches_the_trunk_in_e164_with_the_users_did(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    user = line_user(database_url, credit="10")
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, "0123456789", [("pause", 2000), ("bye", None)],
                       caller=user["sip_username"], auth=(user["sip_username"], user["sip_password"]),
                       local_ip=PHONE_IP)
    assert result.ok, result.stderr
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    invite = next(text for _at, text in far_result.messages if "INVITE sip:" in text)
    assert "INVITE sip:+33123456789@" in invite
    assert DID in invite.split("From:", 1)[1].splitlines()[0]
    rows = wait_for_cdrs(database_url, 2)
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert outbound["to_number"] == "+33123456789" and str(outbound["account_id"]) == user["account_id"]
    inbound = next(r for r in rows if r["direction"] == "inbound")
    assert "cost" not in json.loads(inbound["extra"])  # the cost is the dialled leg's column, not repeated
    # The dialled leg carries its rating: 0.60 EUR/min, per second from the first, rounded once.
    assert 2 <= outbound["billed_s"] <= 3  # SIPp held the call 2 s after the answer
    assert (outbound["rating_deck"], outbound["rating_prefix"], outbound["currency"]) == ("test", "33", "EUR")
    assert outbound["rate_per_minute"] == Decimal("0.60") and outbound["included"] is False
    assert outbound["cost"] == (Decimal("0.60") * outbound["billed_s"] / 60).quantize(Decimal("0.0001"))
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert (credit["balance"], credit["reserved"]) == (10 - outbound["cost"], 0)  # debited exactly that
    assert user["sip_password"] not in "\n".join(d.raw + d.stderr)  # never in the logs (issue 11)


@pytest.mark.parametrize(("extra", "second"), [(0, 486), (1, 200)])
def test_a_second_simultaneous_call_is_refused_busy_unless_the_account_has_an_extra_channel(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, extra: int, second: int) -> None:
    user = line_user(database_url, extra_channels=extra, credit="1000")  # two 4-hour holds fit
    far = sipp.start_far_end(asterisk.trunk_port, "answer", calls=2 if second == 200 else 1)
    d = daemon_factory()
    d.wait_until_ready()
    auth = (user["sip_username"], user["sip_password"])
    first = sipp.start_call(asterisk.sip_port, "0123456789", [("pause", 5000), ("bye", None)],
                            caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
    # The first call is through the trunk and talking: the engine set its limit at the answer.
    wait_for(lambda: limit_set(asterisk, user), 15, "the first call to be answered")
    then = [("pause", 1000), ("bye", None)] if second == 200 else []
    res = sipp.call(asterisk.sip_port, "0123456780", then, caller=user["sip_username"], auth=auth,
                    local_ip=PHONE_IP, expect=second)
    assert res.ok, res.stderr
    assert sipp.finish(*first).ok
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr
    if second == 486:
        refused = wait_for(lambda: [r for r in wait_for_cdrs(database_url, 3) if r["disposition"] == "BUSY"], 10,
                           "the refused call's CDR")
        assert json.loads(refused[0]["extra"])["refused"] == "channel_limit"


def limit_set(asterisk: AsteriskInstance, user: dict[str, Any]) -> bool:
    """Whether the user's channel is up with an absolute timeout (TIMEOUT(absolute)) set in Asterisk."""
    for line in asterisk.rx("core show channels concise", check=False).splitlines():
        name = line.split("!", 1)[0]
        if name.startswith(f"PJSIP/{user['sip_username']}-"):
            shown = asterisk.rx(f"core show channel {name}", check=False)
            return "Time to Hangup:" in shown and "Time to Hangup: 0\n" not in shown
    return False


def test_a_prepaid_call_is_cut_by_asterisk_at_its_limit_while_the_engine_is_stopped(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    # 0.60 EUR/min and 0.06 EUR of credit: 6 seconds.
    user = line_user(database_url, credit="0.06")
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, "0123456789", [("wait_bye", None)], caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP,
                           bye_timeout_s=40)
    # Killed once the engine has set the exact limit at answer (the caller's channel gets it last);
    # before that, only the looser limit set at dialling (talk + ring time) holds.
    wait_for(lambda: limit_set(asterisk, user), 15, "the call to be up with its limit")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)  # no engine from here on: only Asterisk can end the call
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr  # the far end received a BYE
    talk = (far_result.first("UDP message received", "BYE") - far_result.first("UDP message received", "ACK"))
    assert 4.0 < talk.total_seconds() < 8.0, talk
    assert sipp.finish(*call).ok
    [held] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                user["account_id"])
    assert held["reserved"] == Decimal("0.06")  # the dead engine never settled its hold
    wait_for(lambda: len(db(database_url, "SELECT DISTINCT uniqueid FROM cel WHERE eventtype = 'CHAN_END'")) >= 2,
             10, "Asterisk's channel events of both legs")
    # The next engine settles it at start, from Asterisk's events of the call's channel: all 6 s.
    restarted = daemon_factory()
    swept = restarted.wait_for_log("credit_holds_settled_after_engine_loss")
    assert (swept["holds"], swept["from_cel"], swept["full_hold"]) == (1, 1, 0), swept
    [settled] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                   user["account_id"])
    assert (settled["balance"], settled["reserved"]) == (0, 0)


def test_a_call_still_up_when_the_engine_restarts_stays_up_and_its_hold_is_settled_when_it_ends(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    user = line_user(database_url, credit="10")  # 0.60 EUR/min: a hold of 1000 s, 10 EUR
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, "0123456789", [("pause", 15000), ("bye", None)],
                           caller=user["sip_username"], auth=(user["sip_username"], user["sip_password"]),
                           local_ip=PHONE_IP)
    wait_for(lambda: limit_set(asterisk, user), 15, "the call to be up with its limit")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    # The next engine finds the call up and bridged: it resumes it (no second dial, nobody cut), keeps its
    # hold (not settled at the full 10 EUR) and settles it when the call ends, for the seconds it lasted.
    restarted = daemon_factory()
    assert restarted.wait_for_log("ari_resynced", 30)["adopted"] == 1  # the caller; the leg is its call's
    assert restarted.wait_for_log("line_call_resumed", 10)["outbound"] is True
    result = sipp.finish(*call)
    assert result.ok, result.stderr  # the caller hung up after its 15 s: the engine did not cut the call
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr  # the far end got its BYE when the caller left, and one INVITE
    assert sum("INVITE sip:" in text for _at, text in far_result.messages) == 1
    rows = wait_for_cdrs(database_url, 2)
    assert len(rows) == 2 and len({r["leg_id"] for r in rows}) == 2
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert outbound["to_number"] == "+33123456789" and str(outbound["account_id"]) == user["account_id"]
    assert 14 <= outbound["billed_s"] <= 20, outbound["billed_s"]
    inbound = next(r for r in rows if r["direction"] == "inbound")
    assert (json.loads(inbound["extra"])["outcome"], inbound["flow"]) == ("caller_hung_up", "line-outbound")
    swept = restarted.wait_for_log("credit_holds_settled_after_engine_loss", 60)
    assert (swept["holds"], swept["full_hold"], swept["kept"]) == (1, 0, 0), swept
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert credit["reserved"] == 0 and Decimal("9") < credit["balance"] < Decimal("10"), credit
    [hold] = db(database_url, "SELECT billed_s FROM credit_reservation WHERE account_id = $1::uuid", user["account_id"])
    assert Decimal(10) - credit["balance"] == (Decimal("0.60") * hold["billed_s"] / 60).quantize(Decimal("0.0001"))
    assert not restarted.tracebacks()


def test_an_emergency_call_from_a_line_without_emergency_hears_why_and_nothing_leaves(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    from tests.support.asterisk import render_prompts

    render_prompts(asterisk)
    user = line_user(database_url)  # no credit, emergency never enabled
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, "112", [("wait_bye", None)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    assert result.talk_s() > 3  # the announcement, not silence
    assert d.wait_for_log("emergency_call_refused")["rule"] == "emergency_not_enabled"
    [row] = wait_for_cdrs(database_url, 1)
    assert row["disposition"] == "EMERGENCY_REFUSED" and json.loads(row["extra"])["emergency"] is True
    assert not d.events("emergency_call")


def test_an_allowed_emergency_call_reaches_the_gateway_with_the_location_even_with_zero_credit(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    from tests.integration.test_lines_cli import run_cli

    user = line_user(database_url)  # zero credit, one channel
    res = run_cli(database_url, "emergency", "set", user["account_id"], "--enable", "--location",
                  "12 rue de la Paix, 75002 Paris", "--verified")
    assert res.returncode == 0, res.stderr
    gateway = sipp.start_far_end(asterisk.emergency_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, "15", [("pause", 2000), ("bye", None)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    gw = sipp.finish(*gateway)
    assert gw.ok, gw.stderr
    invite = next(text for _at, text in gw.messages if "INVITE sip:" in text)
    assert "INVITE sip:15@" in invite
    assert "X-Callctl-Location: 12 rue de la Paix, 75002 Paris" in invite
    # ... and as a PIDF-LO body (RFC 4119), as when Asterisk routes the call alone.
    assert "Content-Type: application/pidf+xml" in invite and "Geolocation: <cid:" in invite
    assert "<ca:country>FR</ca:country>" in invite and "<ca:LOC>12 rue de la Paix, 75002 Paris</ca:LOC>" in invite
    assert DID in invite.split("From:", 1)[1].splitlines()[0]  # the callback number
    rows = wait_for_cdrs(database_url, 2)
    inbound = next(r for r in rows if r["direction"] == "inbound")
    assert "cost" not in json.loads(inbound["extra"])
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert outbound["cost"] == 0 and outbound["included"] is True  # free of charge, on the leg's CDR
