"""Carriers behind Kamailio (docs/security.md, "Behind Kamailio"): the nodes take every request from Kamailio's
address as their trusted carrier (no authentication, caller ID believed), so Kamailio accepts a request that is
neither a SIP user's nor a node's only from the carriers' networks: an impostor's call to an access number gets
403 at the edge and never reaches a node, the carrier's is answered, a call posing as a SIP user from
elsewhere carries no identity it asserted, a SIP user from any address still registers and calls."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from scripts.devstack import free_port_pair
from tests.integration.test_cluster_bruteforce import billed_user
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.cluster import Cluster
from tests.support.edge_cluster import CARRIER_IP, EDGE_IP, guarded_cluster, register_and_call

pytestmark = pytest.mark.integration
__all__ = ["guarded_cluster"]  # the fixture, imported for this module

WELCOME = "+33900000001"  # an access number: answer, hello-world, hang up
IMPOSTOR_IP = "127.0.0.9"  # anywhere on the Internet but the carrier's SBC


def calls_started(c: Cluster) -> list[dict[str, object]]:
    return [e for engine in c.engines for e in engine.events("call_started")]


def call_asserting_identity(c: Cluster, caller: str, asserted: str, local_ip: str) -> sipp.SippResult:
    """A call to WELCOME (answered, then hung up by the node) whose INVITE carries
    ``P-Asserted-Identity: <sip:asserted@...>``."""
    work = Path(tempfile.mkdtemp(prefix="sipp-pai-"))
    text = sipp.scenario([("wait_bye", None)], caller=caller, work=work)
    text = text.replace("      Call-ID: [call_id]\n      CSeq: 1 INVITE",
                        f"      P-Asserted-Identity: <sip:{asserted}@[local_ip]>\n      Call-ID: [call_id]\n"
                        "      CSeq: 1 INVITE", 1)
    assert "P-Asserted-Identity" in text
    (work / "scenario.xml").write_text(text)
    res = subprocess.run(["sipp", f"{EDGE_IP}:{c.sip_port}", "-sf", str(work / "scenario.xml"), "-s", WELCOME,
                          "-i", local_ip, "-p", str(free_port_pair()), "-m", "1", "-nostdin", "-timeout", "30s",
                          "-timeout_error", "-mp", str(free_port_pair())],
                         cwd=work, capture_output=True, text=True, timeout=60)
    return sipp.SippResult(res.returncode, res.stdout[-2000:], res.stderr[-2000:], [])


def test_a_call_from_outside_the_carrier_networks_is_refused_at_the_edge_and_the_carrier_s_is_answered(
        guarded_cluster: Cluster) -> None:
    c = guarded_cluster
    # The impostor poses as the carrier (a telephone number as From, no credentials): refused by Kamailio
    # before any node is asked, and counted as a failed authentication of its address.
    refused = sipp.call(c.sip_port, WELCOME, [], expect=403, caller="33123456789", local_ip=IMPOSTOR_IP,
                        remote_ip=EDGE_IP, timeout_s=20)
    assert refused.ok, refused.stdout
    log = c.kamailio.log_file.read_text(errors="replace")
    assert f"sip_not_a_carrier: INVITE to {WELCOME} from {IMPOSTOR_IP}" in log
    assert f"{IMPOSTOR_IP}|" in c.kamailio.rpc("htable.dump", "authfail")
    assert calls_started(c) == []

    # The carrier's own call to the same number reaches a node and is answered.
    answered = sipp.call(c.sip_port, WELCOME, [("wait_bye", None)], local_ip=CARRIER_IP, remote_ip=EDGE_IP,
                         timeout_s=30)
    assert answered.ok, answered.stderr
    wait_for(lambda: len(calls_started(c)) == 1, 15, "the carrier's call started on a node")
    assert len(calls_started(c)) == 1  # the impostor's never did

    # A request that looks like a SIP user's (by its From user alone) from outside the carrier networks
    # passes the edge, and a node that knows no such user identifies it by Kamailio's address as the carrier:
    # the identity it asserts is removed at the edge, never believed (the node's trust_id_inbound).
    posing = call_asserting_identity(c, "u000000000000000", "+33612349999", IMPOSTOR_IP)
    assert posing.ok, posing.stdout
    wait_for(lambda: len(calls_started(c)) == 2, 15, "the posing call started")
    assert not str(calls_started(c)[-1]["caller"]).endswith("9999"), calls_started(c)[-1]

    # A SIP user from an address that is not a carrier's still registers and calls (digest at the node).
    user = billed_user(c.database_url)
    name, password = user["sip_username"], user["sip_password"]
    register_and_call(c, name, password)
    assert not any(e.tracebacks() for e in c.engines)
