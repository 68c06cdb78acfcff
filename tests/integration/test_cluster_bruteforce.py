"""SIP brute force behind Kamailio (docs/security.md, "Behind Kamailio"): wrong passwords from one address
through Kamailio get that address banned at the edge after the engines' own threshold, while a good user
from another address registers and calls; the nodes see every request from Kamailio's address and never
block it; a plain flood is dropped; an operator lists and lifts the bans with the fraud CLI, a repeat ban
lasts twice as long, and a ban ends by itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callctl.fraud.kamailio import parse_dump
from scripts.devstack import REPO, free_port_pair
from tests.integration.test_lines_calls import DID
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.cluster import Cluster
from tests.support.edge_cluster import EDGE_IP, guarded_cluster, register_and_call
from tests.support.registrar import PHONE_IP

pytestmark = pytest.mark.integration
__all__ = ["guarded_cluster"]  # the fixture, imported for this module

REGISTER_FLOOD_IP, INVITE_FLOOD_IP, FLOOD_IP = "127.0.0.5", "127.0.0.6", "127.0.0.7"


def billed_user(database_url: str) -> dict[str, str]:
    """test_lines_calls.line_user with 10 EUR of credit, its independent steps side by side (each CLI run
    starts a Python: about 3 s here)."""
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")["id"]
    deck = Path(tempfile.mkdtemp(prefix="deck-")) / "deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,2,0.60,EUR\n")
    with ThreadPoolExecutor(3) as pool:
        user = pool.submit(cli, database_url, "user", "add", "--account", acc, "--name", "Alice", "--number", DID)
        steps = [pool.submit(run_cli, database_url, "rates", "import", str(deck), "--deck", "test"),
                 pool.submit(run_cli, database_url, "credit", "add", "--account", acc, "10")]
        assert all(step.result().returncode == 0 for step in steps), [s.result().stderr for s in steps]
        return dict(user.result())


def register_through(c: Cluster, local_ip: str, user: str, password: str | None, final: int, *,
                     calls: int = 1) -> sipp.SippResult:
    """``calls`` REGISTERs of ``user`` from ``local_ip`` to Kamailio, one after the other (see
    sipp.register_scenario); ``ok`` when each got ``final``."""
    work = Path(tempfile.mkdtemp(prefix="sipp-edge-"))
    (work / "scenario.xml").write_text(sipp.register_scenario(user, password, final))
    res = subprocess.run(["sipp", f"{EDGE_IP}:{c.sip_port}", "-sf", str(work / "scenario.xml"), "-i", local_ip,
                          "-p", str(free_port_pair()), "-m", str(calls), "-r", "5", "-l", "1", "-nostdin",
                          "-timeout", "20s", "-timeout_error", "-recv_timeout", "3000"],
                         cwd=work, capture_output=True, text=True, timeout=40)
    return sipp.SippResult(res.returncode, res.stdout[-2000:], res.stderr[-2000:], [])


_OPTIONS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="a flood of OPTIONS, no waiting for answers">
  <send>
    <![CDATA[
      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:scanner@[local_ip]>;tag=[pid]flood[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


def flood(c: Cluster, local_ip: str, requests: int) -> None:
    """``requests`` OPTIONS from ``local_ip`` to Kamailio as fast as SIPp sends them."""
    work = Path(tempfile.mkdtemp(prefix="sipp-flood-"))
    (work / "options.xml").write_text(_OPTIONS)
    subprocess.run(["sipp", f"{EDGE_IP}:{c.sip_port}", "-sf", str(work / "options.xml"), "-i", local_ip,
                    "-p", str(free_port_pair()), "-m", str(requests), "-r", str(requests), "-nostdin",
                    "-timeout", "10s"], cwd=work, capture_output=True, text=True, timeout=30)


def bans(c: Cluster) -> set[str]:
    """The addresses banned now (an ended ban stays in the dump until Kamailio's next sweep)."""
    return {b.address for b in parse_dump(c.kamailio.rpc("htable.dump", "ipban"))}


def fraud_cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=c.database_url, CALLCTL_KAMAILIO_CTL=c.kamailio.ctl_socket)
    return subprocess.run([sys.executable, "-m", "callctl", "fraud", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_wrong_passwords_through_kamailio_ban_the_address_at_the_edge_and_never_block_kamailio_on_the_nodes(
        guarded_cluster: Cluster) -> None:
    c = guarded_cluster
    for engine in c.engines:  # each engine owns its Asterisk's ACL and would block an address itself
        engine.wait_for_log("sip_acl_applied", blocked=0)
    user = billed_user(c.database_url)
    name, password = user["sip_username"], user["sip_password"]

    # Wrong passwords on INVITEs (challenged again although they carried credentials): the 4th bans the
    # address (first: the test ends by watching this ban end by itself).
    invites = sipp.start_call(c.sip_port, "0123456789", [], caller=name, auth=(name, "wrong-too"), expect=401,
                              calls=6, rate=5, local_ip=INVITE_FLOOD_IP, remote_ip=EDGE_IP, timeout_s=20)
    sipp.finish(*invites)  # the attempts after the 4th met the ban (403): that is the point
    assert bans(c) == {INVITE_FLOOD_IP}
    # 3 wrong passwords on REGISTERs from another address: under the threshold (4).
    assert register_through(c, REGISTER_FLOOD_IP, name, "guessed-wrong", 401, calls=3).ok
    assert bans(c) == {INVITE_FLOOD_IP}
    # The 4th bans it: from then on Kamailio answers 403 before any node is asked.
    assert register_through(c, REGISTER_FLOOD_IP, name, "guessed-wrong", 401).ok
    wait_for(lambda: REGISTER_FLOOD_IP in bans(c), 5, "the flooding address banned")
    refused = register_through(c, REGISTER_FLOOD_IP, name, None, 403)
    assert refused.ok, refused.stdout
    assert "sip_address_banned: 127.0.0.5 banned for 20 s after 4 failed authentications in 60 s" in \
        c.kamailio.log_file.read_text(errors="replace")

    # The operator sees the bans at once and lifts one: that address is challenged again (401), not refused.
    with ThreadPoolExecutor(2) as pool:
        listing = pool.submit(fraud_cli, c, "blocks")
        nothing = pool.submit(fraud_cli, c, "unblock", PHONE_IP).result()  # a good address: nothing to lift
        listed = listing.result()
    assert nothing.returncode == 1 and f"{PHONE_IP} is not blocked" in nothing.stderr
    assert listed.returncode == 0, listed.stderr
    assert {(b["address"], b["where"]) for b in json.loads(listed.stdout)} == {
        (REGISTER_FLOOD_IP, "kamailio"), (INVITE_FLOOD_IP, "kamailio")}
    lifted = fraud_cli(c, "unblock", REGISTER_FLOOD_IP, "--by", "ops-carol")
    assert lifted.returncode == 0 and '"lifted_at_kamailio": true' in lifted.stdout, lifted.stderr
    # In the fraud audit trail as the nodes' unblocks are: who lifted which ban, and where it was.
    [audit] = db(c.database_url, "SELECT scope, changed_by, before::text FROM fraud_audit WHERE what = 'unblock'")
    assert (audit["scope"], audit["changed_by"]) == (REGISTER_FLOOD_IP, "ops-carol")
    assert [(b["address"], b["where"]) for b in json.loads(audit["before"])] == [(REGISTER_FLOOD_IP, "kamailio")]
    assert register_through(c, REGISTER_FLOOD_IP, name, None, 401).ok
    # Its count started again at the ban (3 more failures pass); a second ban lasts twice as long.
    assert register_through(c, REGISTER_FLOOD_IP, name, "guessed-wrong", 401, calls=3).ok
    assert register_through(c, REGISTER_FLOOD_IP, name, "guessed-wrong", 401).ok
    wait_for(lambda: "127.0.0.5 banned for 40 s" in c.kamailio.log_file.read_text(errors="replace"), 5,
             "the second ban, doubled")
    # A plain flood (150 requests in about a second, over pike's 64 in 2 s) is dropped, not banned.
    flood(c, FLOOD_IP, 150)
    wait_for(lambda: f"sip_flood_dropped: {FLOOD_IP} sends more than 64 requests in 2 s" in
             c.kamailio.log_file.read_text(errors="replace"), 5, "the flood dropped")
    assert FLOOD_IP not in bans(c)

    # A good user from another address still registers and calls, through the same Kamailio.
    register_and_call(c, name, password)

    # The nodes saw every failure coming from Kamailio's address: counted, never blocked (it is trusted).
    failures = sum(float(m) for e in c.engines
                   for m in re.findall(r"^callctl_sip_auth_failures_total (\S+)$", e.get("/metrics")[1], re.M))
    assert failures >= 8, failures
    for engine in c.engines:
        assert not engine.events("sip_address_blocked"), engine.events("sip_address_blocked")
        assert not engine.events("sip_acl_applied", blocked=1)
    assert db(c.database_url, "SELECT count(*) AS n FROM fraud_block")[0]["n"] == 0

    # The other ban ends by itself (sip_block_s, 20 s).
    wait_for(lambda: INVITE_FLOOD_IP not in bans(c), 30, "the ban to expire")
    again = register_through(c, INVITE_FLOOD_IP, name, None, 401)
    assert again.ok, (again.stdout, c.kamailio.rpc("htable.dump", "ipban"))
    assert not any(e.tracebacks() for e in c.engines)
