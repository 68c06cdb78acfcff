"""SIP brute force on a real Asterisk: SIPp floods REGISTER and INVITE with wrong passwords from two
addresses while a good user registers from a third; the engine reads Asterisk's security events over AMI
and blocks the flooding addresses in PJSIP's ACL, lifts them on command and when the block expires."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_fraud_calls import line_user
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

GOOD_IP, REGISTER_FLOOD_IP, INVITE_FLOOD_IP = "127.0.0.2", "127.0.0.5", "127.0.0.6"

def register(sip_port: int, local_ip: str, user: str, password: str | None, final: int, *, calls: int = 1,
             rate: float = 10, timeout_s: int = 10) -> subprocess.Popen[str]:
    work = Path(tempfile.mkdtemp(prefix="sipp-reg-"))
    (work / "scenario.xml").write_text(sipp.register_scenario(user, password, final))
    return subprocess.Popen(["sipp", f"127.0.0.1:{sip_port}", "-sf", str(work / "scenario.xml"), "-i", local_ip,
                             "-p", str(free_port_pair()), "-m", str(calls), "-r", str(rate), "-l", str(calls),
                             "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", "3000",
                             "-max_recv_loops", "1000"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")


def finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, (out + err)[-2000:]


def acl_removed(d: Any, address: str) -> bool:
    return any(address in e["removed"] for e in d.events("sip_acl_applied"))


@pytest.fixture
def asterisk(database_url: str) -> Iterator[AsteriskInstance]:
    """Realtime users from this test's database, and AMI on for the engine."""
    ensure_root()
    inst = AsteriskInstance(f"brute-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=31600, rtp_end=31699, trunk_port=free_port_pair(), ami_port=free_port())
    inst.use_database(database_url)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def test_password_floods_are_blocked_at_the_edge_while_a_good_user_registers_and_blocks_lift(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    user = line_user(database_url, tmp_path, rate="0.60", credit="10")
    name, password = user["sip_username"], user["sip_password"]
    d = daemon_factory(ami_address=f"127.0.0.1:{asterisk.ami_port}", ami_user=asterisk.ami_user,
                       ami_password=asterisk.ami_password, sip_block_failures="5", sip_block_window_s="60",
                       sip_block_s="40")  # the operator lifts one before then, even on a loaded machine
    d.wait_until_ready()
    d.wait_for_log("sip_acl_applied", blocked=0)  # the engine owns Asterisk's ACL from its start
    # A call of the good user is up through the whole attack (the ACL rewrites reload res_pjsip).
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    talking = sipp.start_call(asterisk.sip_port, "0123456789", [("pause", 8000), ("bye", None)], caller=name,
                              auth=(name, password), local_ip=GOOD_IP)
    d.wait_for_log("call_started")

    good = register(asterisk.sip_port, GOOD_IP, name, password, 200, calls=10, rate=2)
    flood = register(asterisk.sip_port, REGISTER_FLOOD_IP, name, "guessed-wrong", 401, calls=12, rate=20)
    invites = sipp.start_call(asterisk.sip_port, "0123456789", [], caller=name,
                              auth=(name, "guessed-wrong-too"), local_ip=INVITE_FLOOD_IP, calls=12, rate=20,
                              expect=401, timeout_s=15)
    blocked = {d.wait_for_log("sip_address_blocked", address=ip)["address"] for ip in (REGISTER_FLOOD_IP,
                                                                                      INVITE_FLOOD_IP)}
    assert blocked == {REGISTER_FLOOD_IP, INVITE_FLOOD_IP}
    finished(flood)  # some of its attempts met the block (403): that is the point
    sipp.finish(*invites)
    rc, out = finished(good)
    assert rc == 0, out  # every one of the good user's 10 registrations succeeded during the floods
    wait_for(lambda: {REGISTER_FLOOD_IP, INVITE_FLOOD_IP} <= {ip for e in d.events("sip_acl_applied")
                                                              for ip in e["added"]}, 10, "both blocks in the ACL")

    in_call = sipp.finish(*talking)
    assert in_call.ok, in_call.stderr  # the good user's call lasted its 8 s and ended with its own BYE
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr

    # Blocked at the edge: the flooder now gets 403 before any challenge; the good user still registers.
    rc, out = finished(register(asterisk.sip_port, REGISTER_FLOOD_IP, name, None, 403))
    assert rc == 0, out
    rc, out = finished(register(asterisk.sip_port, GOOD_IP, name, password, 200))
    assert rc == 0, out
    listed = run_cli(database_url, "fraud", "blocks")
    assert listed.returncode == 0 and REGISTER_FLOOD_IP in listed.stdout and INVITE_FLOOD_IP in listed.stdout

    # Lifted by an operator: challenged again (401), not refused.
    lifted = cli(database_url, "fraud", "unblock", REGISTER_FLOOD_IP, "--by", "ops-carol")
    assert lifted["lifted"] == 1
    wait_for(lambda: acl_removed(d, REGISTER_FLOOD_IP), 10, "the lifted block out of the ACL")
    rc, out = finished(register(asterisk.sip_port, REGISTER_FLOOD_IP, name, None, 401))
    assert rc == 0, out
    [audit] = db(database_url, "SELECT scope, what, changed_by FROM fraud_audit WHERE what = 'unblock'")
    assert (audit["scope"], audit["changed_by"]) == (REGISTER_FLOOD_IP, "ops-carol")
    # The other block expires by itself (40 s after it was set).
    wait_for(lambda: acl_removed(d, INVITE_FLOOD_IP), 60, "the expired block out of the ACL")
    rc, out = finished(register(asterisk.sip_port, INVITE_FLOOD_IP, name, None, 401))
    assert rc == 0, out
    assert not d.events("sip_address_blocked", address=GOOD_IP)
    assert not d.tracebacks()


def test_loopback_is_never_blocked(daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    d = daemon_factory(ami_address=f"127.0.0.1:{asterisk.ami_port}", ami_user=asterisk.ami_user,
                       ami_password=asterisk.ami_password, sip_block_failures="3")
    d.wait_until_ready()
    d.wait_for_log("sip_acl_applied", blocked=0)
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    name = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice")["sip_username"]
    flood = register(asterisk.sip_port, "127.0.0.1", name, "wrong", 401, calls=8, rate=20)
    finished(flood)
    rc, out = finished(register(asterisk.sip_port, "127.0.0.1", name, None, 401))
    assert rc == 0, out  # still challenged: never blocked
    assert not d.events("sip_address_blocked")
    assert db(database_url, "SELECT count(*) AS n FROM fraud_block")[0]["n"] == 0
