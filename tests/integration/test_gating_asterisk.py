"""Emergency calls decided by Asterisk alone (engine stopped) and the FastAGI gate in extensions.conf,
with real SIP calls from SIPp to a real Asterisk whose users come from PostgreSQL (realtime)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance, free_port
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_calls import DID, PHONE_IP, asterisk, line_user
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.asterisk import render_prompts, wait_for

pytestmark = pytest.mark.integration
__all__ = ["asterisk"]  # the per-test Asterisk with realtime users from this test's database

# A ';' and a ',' on purpose: the realtime set_var column escapes the first, Set() must keep the second.
LOCATION = "Bat. B; 12 rue de la Paix, 75002 Paris"


def endpoint_vars(database_url: str, user: dict[str, Any]) -> str:
    [row] = db(database_url, "SELECT set_var FROM ps_endpoints WHERE id = $1", user["sip_username"])
    return str(row["set_var"] or "")


@contextlib.contextmanager
def silent_gateways(*ports: int) -> Iterator[list[socket.socket]]:
    """UDP sockets on the trunks' SIP ports: whatever Asterisk sends there is kept, nothing answered."""
    socks = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def received(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(65536))
    return out


def ended_channels(database_url: str) -> int:
    return len(db(database_url, "SELECT DISTINCT uniqueid FROM cel WHERE eventtype = 'CHAN_END'"))


def test_an_allowed_emergency_call_reaches_the_gateway_with_the_location_while_the_engine_is_stopped(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    since = dt.datetime.now(dt.UTC)
    user = line_user(database_url)  # no credit, and the engine is down: Asterisk alone decides
    enabled = cli(database_url, "account", "emergency", user["account_id"], "--enable", "--location", LOCATION,
                  "--verified")
    assert enabled["enabled"] is True and enabled["verified_at"]
    assert "CALLCTL_EMERGENCY=allow" in endpoint_vars(database_url, user)
    d = daemon_factory()
    d.wait_until_ready()
    assert d.stop() == 0  # stopped: Stasis() fails at once, the dialplan takes over
    gateway = sipp.start_far_end(asterisk.emergency_port, "answer")
    result = sipp.call(asterisk.sip_port, "15", [("pause", 1500), ("bye", None)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    gw = sipp.finish(*gateway)
    assert gw.ok, gw.stderr
    invite = next(text for _at, text in gw.messages if "INVITE sip:" in text)
    assert "INVITE sip:15@" in invite
    assert f"X-Callctl-Location: {LOCATION}" in invite
    assert DID in invite.split("From:", 1)[1].splitlines()[0]  # the callback number
    # ... and as a PIDF-LO body (RFC 4119, civicAddress): the account's country, the text on file.
    assert "Content-Type: multipart/mixed" in invite and "Content-Type: application/pidf+xml" in invite
    assert "Geolocation: <cid:" in invite
    assert "<ca:country>FR</ca:country>" in invite and f"<ca:LOC>{LOCATION}</ca:LOC>" in invite
    log = (asterisk.host_dir / "log" / "messages.log").read_text(errors="replace")
    assert "decided by Asterisk: allow (emergency_allowed)" in log
    [kept] = db(database_url, "SELECT decision, rule, caller FROM asterisk_emergency_call")
    assert kept == {"decision": "allow", "rule": "emergency_allowed", "caller": DID}

    # The engine, back, writes the call's CDRs from Asterisk's channel events (the phone's channel and
    # the one it dialled): free, and `cdr reconcile` no longer lists the call.
    wait_for(lambda: ended_channels(database_url) >= 2, 10, "Asterisk's events of both channels")
    back = daemon_factory()
    assert back.wait_for_log("asterisk_emergency_cdrs_written")["calls"] == 1
    rows = wait_for_cdrs(database_url, 2)
    [uniqueid] = [r["uniqueid"] for r in db(database_url, "SELECT uniqueid FROM asterisk_emergency_call")]
    inbound = next(r for r in rows if r["direction"] == "inbound")
    outbound = next(r for r in rows if r["direction"] == "outbound")
    assert inbound["channel_id"] == uniqueid and outbound["call_id"] == inbound["call_id"] == inbound["leg_id"]
    for row in (inbound, outbound):
        assert (row["from_number"], row["to_number"], str(row["account_id"])) == (DID, "15", user["account_id"])
        assert (row["disposition"], row["cost"], row["included"]) == ("ANSWERED", 0, True)
        assert row["started_at"] <= row["answered_at"] < row["ended_at"] and row["billed_s"] >= 1
        assert json.loads(row["extra"])["decided_by"] == "asterisk"
    assert json.loads(outbound["extra"])["target"].startswith("PJSIP/emergency-pidf-")
    res = run_cli(database_url, "cdr", "reconcile", "--since", since.isoformat(),
                  "--until", (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat())
    report = json.loads(res.stdout)
    assert res.returncode == 0 and (report["channels_ended"], report["with_cdr"]) == (2, 2), res.stdout + res.stderr


def test_an_emergency_call_the_draining_engine_hands_back_is_still_routed_by_asterisk(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    user = line_user(database_url, credit="10", extra_channels=1)
    cli(database_url, "account", "emergency", user["account_id"], "--enable", "--location", LOCATION, "--verified")
    auth = (user["sip_username"], user["sip_password"])
    trunk = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    ongoing = sipp.start_call(asterisk.sip_port, "0123456789", [("pause", 6000), ("bye", None)],
                              caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
    wait_for(lambda: "Up" in asterisk.rx("core show channels concise", check=False), 15, "the first call to be up")
    d.signal(signal.SIGTERM)  # draining: the engine waits for that call and hands new ones back
    d.wait_for_log("callctl_stopping")
    gateway = sipp.start_far_end(asterisk.emergency_port, "answer")
    result = sipp.call(asterisk.sip_port, "112", [("pause", 1000), ("bye", None)], caller=user["sip_username"],
                       auth=auth, local_ip=PHONE_IP)
    assert result.ok, result.stderr
    gw = sipp.finish(*gateway)
    assert gw.ok, gw.stderr
    invite = next(text for _at, text in gw.messages if "INVITE sip:" in text)
    assert "INVITE sip:112@" in invite and f"X-Callctl-Location: {LOCATION}" in invite
    assert d.events("call_handed_back")
    assert sipp.finish(*ongoing).ok and sipp.finish(*trunk).ok


def test_a_refused_emergency_call_is_announced_and_nothing_leaves_while_the_engine_is_stopped(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    render_prompts(asterisk)
    user = line_user(database_url)
    # Enabled but the location never proved: refused, like the engine would.
    cli(database_url, "account", "emergency", user["account_id"], "--enable", "--location", LOCATION)
    set_var = endpoint_vars(database_url, user)
    assert "CALLCTL_EMERGENCY=deny" in set_var and "CALLCTL_EMERGENCY_RULE=emergency_location_unverified" in set_var
    assert LOCATION.split(";")[1].strip() not in set_var  # the location travels with allowed calls only
    with silent_gateways(asterisk.emergency_port, asterisk.trunk_port) as gateways:
        result = sipp.call(asterisk.sip_port, "112", [("wait_bye", None)], caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
        assert result.ok, result.stderr
        assert result.talk_s() > 3  # the announcement, not silence
        assert [received(g) for g in gateways] == [[], []]
    log = (asterisk.host_dir / "log" / "messages.log").read_text(errors="replace")
    assert "decided by Asterisk: deny (emergency_location_unverified)" in log
    # Asterisk kept the decision; the engine records it when it connects again.
    [kept] = db(database_url, "SELECT account_id, callee, decision, rule FROM asterisk_emergency_call")
    assert kept == {"account_id": user["account_id"], "callee": "112", "decision": "deny",
                    "rule": "emergency_location_unverified"}
    wait_for(lambda: ended_channels(database_url) >= 1, 10, "Asterisk's events of the call")
    d = daemon_factory()
    assert d.wait_for_log("emergency_calls_decided_by_asterisk")["refused"] == 1
    [row] = db(database_url, "SELECT caller, callee, rule, emergency, automated FROM gating_decision "
                             "WHERE account_id = $1::uuid", user["account_id"])
    assert row == {"caller": DID, "callee": "112", "rule": "emergency_location_unverified", "emergency": True,
                   "automated": False}
    # ... and its CDR, like the engine's own refusals: EMERGENCY_REFUSED with the rule, the announcement's times.
    d.wait_for_log("asterisk_emergency_cdrs_written")
    [cdr] = wait_for_cdrs(database_url, 1)
    assert (cdr["disposition"], cdr["direction"], cdr["from_number"], cdr["to_number"]) == \
        ("EMERGENCY_REFUSED", "inbound", DID, "112")
    assert json.loads(cdr["extra"])["refused"] == "emergency_location_unverified" and cdr["cost"] is None
    assert "emergency_location_unverified" in cdr["hangup_reason"] and cdr["billed_s"] > 3  # the announcement
    # A replay (an engine that died before marking the call) writes it again under the same leg id.
    db(database_url, "UPDATE asterisk_emergency_call SET cdr_at = NULL")
    assert d.stop() == 0
    again = daemon_factory()
    again.wait_for_log("asterisk_emergency_cdrs_written")
    assert again.stop() == 0  # the CDR writer drains at shutdown
    assert [r["leg_id"] for r in db(database_url, "SELECT leg_id FROM cdr")] == [cdr["leg_id"]]


def test_disabling_emergency_calls_and_a_new_number_reach_asterisks_copy(database_url: str) -> None:
    user = line_user(database_url)
    cli(database_url, "emergency", "set", user["account_id"], "--enable", "--location", LOCATION, "--verified")
    allowed = endpoint_vars(database_url, user)
    assert "CALLCTL_EMERGENCY_LOCATION=Bat. B^3B 12 rue de la Paix, 75002 Paris" in allowed
    assert f"CALLCTL_EMERGENCY_CALLBACK={DID}" in allowed and "CALLCTL_EMERGENCY_NUMBERS=112-15-17-18-" in allowed
    cli(database_url, "number", "assign", "+33170000000", "--user", user["id"])
    assert "CALLCTL_EMERGENCY_CALLBACK=+33170000000" in endpoint_vars(database_url, user)  # the caller ID DID
    off = cli(database_url, "account", "emergency", user["account_id"], "--disable")
    assert off["enabled"] is False and off["location"] == LOCATION  # kept on file
    disabled = endpoint_vars(database_url, user)
    assert "CALLCTL_EMERGENCY=deny" in disabled and "LOCATION" not in disabled


def test_the_daemon_rewrites_asterisks_copy_at_start_and_after_a_reload_of_the_country_table(
        daemon_factory: Any, database_url: str, tmp_path: Path) -> None:
    user = line_user(database_url)
    # A status written behind the commands' back (by hand, or before the copy existed).
    db(database_url, "INSERT INTO account_emergency (account_id, enabled, location, verified_at) "
                     "VALUES ($1::uuid, true, 'Rue X', now())", user["account_id"])
    assert "CALLCTL_EMERGENCY=deny" in endpoint_vars(database_url, user)
    dialplan = tmp_path / "dialplan"
    shutil.copytree(REPO / "dialplan", dialplan)
    d = daemon_factory(dialplan_dir=str(dialplan))
    assert d.wait_for_log("emergency_vars_refreshed")["changed"] == 1
    assert "CALLCTL_EMERGENCY=allow" in endpoint_vars(database_url, user)
    countries = dialplan / "countries.yaml"
    countries.write_text(countries.read_text().replace('numbers: ["112", "15", "17",', 'numbers: ["112", "17",'))
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(d.events("emergency_vars_refreshed")) == 2, 20, "the refresh after the reload")
    assert "CALLCTL_EMERGENCY_NUMBERS=112-17-18-" in endpoint_vars(database_url, user)


# -- the FastAGI gate from extensions.conf -------------------------------------------------------


def _hostile_sessions(port: int, stop: threading.Event) -> list[threading.Thread]:
    """Half-sent headers then close, 1 MB of headers, 1 byte per second, non-UTF-8: until ``stop``."""

    def half_sent() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"agi_network: yes\nagi_chan")
            time.sleep(0.05)

    def huge() -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for _ in range(256):
                s.sendall(b"agi_x: " + b"y" * 4000 + b"\n")

    def slow_loris() -> None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for byte in b"agi_network: yes\nagi_request: agi://127.0.0.1/gate\n":
                if stop.wait(1.0):
                    break
                s.sendall(bytes([byte]))

    def not_utf8() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"agi_network_script: gate\nagi_calleridname: Ren\xe9 \xff\xfe\n\x80\x81: \xc3\n\n")
                s.settimeout(2)
                s.recv(4096)
            time.sleep(0.05)

    threads = [threading.Thread(target=f, daemon=True) for f in (half_sent, huge, slow_loris, not_utf8)]
    for t in threads:
        t.start()
    return threads


def test_extensions_conf_branches_on_the_fastagi_gate_while_hostile_agi_sessions_run(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    render_prompts(asterisk)
    user = line_user(database_url, credit="10")
    # The operator's own dialplan for this phone: AGI(agi://127.0.0.1:PORT/gate?account=...), no Stasis.
    db(database_url, "UPDATE ps_endpoints SET context = 'callctl-agi-gate' WHERE id = $1", user["sip_username"])
    d = daemon_factory()
    d.wait_for_log("agi_listening", 20)
    agi_port = int(d.env["CALLCTL_AGI_LISTEN"].rpartition(":")[2])
    asterisk.rx(f"dialplan set global CALLCTL_AGI agi://127.0.0.1:{agi_port}")
    stop = threading.Event()
    hostile = _hostile_sessions(agi_port, stop)
    try:
        far = sipp.start_far_end(asterisk.trunk_port, "answer")
        auth = (user["sip_username"], user["sip_password"])
        ordinary = sipp.call(asterisk.sip_port, "0123456789", [("pause", 1000), ("bye", None)],
                             caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
        assert ordinary.ok, ordinary.stderr
        far_result = sipp.finish(*far)
        assert far_result.ok, far_result.stderr
        invite = next(text for _at, text in far_result.messages if "INVITE sip:" in text)
        assert "INVITE sip:+33123456789@" in invite  # CALLCTL_GATE_NUMBER: the gate's E.164
        refused = sipp.call(asterisk.sip_port, "112", [("wait_bye", None)], caller=user["sip_username"],
                            auth=auth, local_ip=PHONE_IP)
        assert refused.ok, refused.stderr
        assert refused.talk_s() > 3  # the emergency announcement, decided by the gate
    finally:
        stop.set()
        for t in hostile:
            t.join(timeout=10)
    rules = [row["rule"] for row in db(database_url, "SELECT rule FROM gating_decision WHERE account_id = $1::uuid",
                                       user["account_id"])]
    assert rules == ["emergency_not_enabled"]  # the emergency decision recorded by the gate, over AGI
    refusals = {e["reason"] for e in d.events("agi_session_refused")}
    assert {"closed_mid_header", "headers_too_large", "malformed_header"} <= refusals
    assert not d.tracebacks()
    wait_for(lambda: d.get("/livez")[0] == 200, 5, "the daemon to stay alive")


# -- automated calls the engine originates -------------------------------------------------------


def run_originate(database_url: str, http: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_HTTP_LISTEN=http)
    return subprocess.run([sys.executable, "-m", "callctl", "originate", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def originate(database_url: str, daemon: Any, *args: str) -> tuple[int, dict[str, Any]]:
    res = run_originate(database_url, daemon.http, *args)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_a_call_the_engine_originates_passes_the_dialer_rules_first_and_runs_its_flow_when_answered(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Dialer SAS", "--country", "FR")
    far = sipp.start_far_end(asterisk.trunk_port, "answer")  # exactly one call may arrive
    d = daemon_factory(start=False)
    common = ["--account", acc["id"], "--flow", "welcome"]
    down = run_originate(database_url, d.http, *common, "--from", "+33170000001", "--to", "+442079460000")
    assert down.returncode == 2 and down.stderr.count("\n") == 1 and "no callctl daemon answering" in down.stderr
    d.start().wait_until_ready()
    typo = run_originate(database_url, d.http, "--account", acc["id"], "--flow", "welcom", "--from", "+33170000001",
                         "--to", "+442079460000")
    assert typo.returncode == 2 and "unknown flow 'welcom'" in typo.stderr, typo.stderr
    code, mobile = originate(database_url, d, *common, "--from", "06 11 11 11 11", "--to", "+442079460000")
    assert code == 1 and (mobile["decision"], mobile["rule"], mobile["originated"]) == \
        ("deny", "mobile_caller_id", False)
    code, emergency = originate(database_url, d, *common, "--from", "+33170000001", "--to", "112")
    assert code == 1 and emergency["rule"] == "emergency_not_originated"
    # Prepaid like any call of the account: nothing rates it yet, so it is not placed (a refusal for
    # credit, which does not count towards the callee's 4 calls in 30 days).
    code, unpaid = originate(database_url, d, *common, "--from", "+33170000001", "--to", "+442079460000")
    assert code == 1 and (unpaid["decision"], unpaid["rule"], unpaid["originated"]) == ("deny", "credit", False)
    assert "not placed: no rate deck" in unpaid["error"], unpaid
    deck = Path(os.environ.get("TMPDIR", "/tmp")) / f"deck-{acc['id']}.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n44,United Kingdom,2,0.60,EUR\n")
    cli_ok = [run_cli(database_url, "rates", "import", str(deck), "--deck", "uk"),
              run_cli(database_url, "credit", "add", "--account", acc["id"], "1.00")]
    assert all(r.returncode == 0 for r in cli_ok), [r.stderr for r in cli_ok]
    code, placed = originate(database_url, d, *common, "--from", "+33170000001", "--to", "+442079460000")
    assert code == 0 and placed["decision"] == "allow" and placed["originated"] is True, placed
    far_result = sipp.finish(*far)  # the flow played its prompt and hung up: the far end got a BYE
    assert far_result.ok, far_result.stderr
    invites = [text for _at, text in far_result.messages if "INVITE sip:" in text]
    assert len(invites) == 1 and "INVITE sip:+442079460000@" in invites[0]
    assert "+33170000001" in invites[0].split("From:", 1)[1].splitlines()[0]
    decisions = db(database_url, "SELECT rule, decision, automated, illegitimate FROM gating_decision "
                                 "WHERE account_id = $1::uuid ORDER BY id", acc["id"])
    assert [(r["rule"], r["decision"], r["automated"], r["illegitimate"]) for r in decisions] == [
        ("mobile_caller_id", "deny", True, True), ("emergency_not_originated", "deny", True, False),
        ("credit", "deny", True, False), ("compliant", "allow", True, False)]
    [row] = wait_for_cdrs(database_url, 1)
    assert (row["flow"], str(row["account_id"]), row["to_number"]) == ("welcome", acc["id"], "+442079460000")
    assert json.loads(row["extra"])["originated"] is True and row["direction"] == "outbound"
    # Charged like a SIP user's call: the rating is on the CDR and the credit was debited by as much.
    assert (row["rating_deck"], row["rating_prefix"], row["included"]) == ("uk", "44", False)
    assert row["cost"] is not None and row["cost"] > 0
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid", acc["id"])
    assert credit["reserved"] == 0 and credit["balance"] == 1 - row["cost"]
    # ... for exactly the CDR's billed seconds (the hold was settled from the CDR's own times).
    [hold] = db(database_url, "SELECT billed_s, channel_id FROM credit_reservation WHERE account_id = $1::uuid",
                acc["id"])
    assert (hold["billed_s"], hold["channel_id"]) == (row["billed_s"], row["channel_id"])
    assert row["cost"] == (Decimal("0.60") * row["billed_s"] / 60).quantize(Decimal("0.0001"))
    report = cli(database_url, "compliance", "report", "--account", acc["id"], "--month",
                 row["started_at"].strftime("%Y-%m"))
    assert (report["illegitimate"], report["penalty_eur"], report["outbound_calls"], report["short_calls"]) == \
        (1, "0.02", 1, 1)  # the mobile caller ID attempt; the originated call lasted a prompt
    assert not d.tracebacks()


def test_with_the_fastagi_gate_unreachable_an_emergency_call_still_gets_asterisks_own_decision(
        asterisk: AsteriskInstance, database_url: str) -> None:
    user = line_user(database_url)
    cli(database_url, "account", "emergency", user["account_id"], "--enable", "--location", LOCATION, "--verified")
    db(database_url, "UPDATE ps_endpoints SET context = 'callctl-agi-gate' WHERE id = $1", user["sip_username"])
    asterisk.rx(f"dialplan set global CALLCTL_AGI agi://127.0.0.1:{free_port()}")  # nobody listens there
    gateway = sipp.start_far_end(asterisk.emergency_port, "answer")
    result = sipp.call(asterisk.sip_port, "112", [("pause", 1000), ("bye", None)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    gw = sipp.finish(*gateway)
    assert gw.ok, gw.stderr
    invite = next(text for _at, text in gw.messages if "INVITE sip:" in text)
    assert "INVITE sip:112@" in invite and f"X-Callctl-Location: {LOCATION}" in invite
