"""Carriers behind Kamailio (docs/security.md, "Carriers behind Kamailio"): the nodes take a request for their
trusted carrier's (no authentication, caller ID believed) only when it carries Kamailio's header with the cluster's
token, which Kamailio adds to the carriers' networks' requests alone: an impostor's call to an access number gets
403 at the edge and never reaches a node, the carrier's is answered (its re-INVITE and BYE too), a call posing as
a SIP user that does not exist is challenged by the node instead of taken for the carrier's, with or without a
forged header, and a SIP user from any address still registers and calls."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from scripts.devstack import CARRIER_HEADER, free_port_pair
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


def run_scenario(c: Cluster, work: Path, text: str, local_ip: str) -> sipp.SippResult:
    """One SIPp call of scenario ``text`` from ``local_ip`` to WELCOME through Kamailio."""
    (work / "scenario.xml").write_text(text)
    res = subprocess.run(["sipp", f"{EDGE_IP}:{c.sip_port}", "-sf", str(work / "scenario.xml"), "-s", WELCOME,
                          "-i", local_ip, "-p", str(free_port_pair()), "-m", "1", "-nostdin", "-timeout", "30s",
                          "-timeout_error", "-mp", str(free_port_pair())],
                         cwd=work, capture_output=True, text=True, timeout=60)
    return sipp.SippResult(res.returncode, res.stdout[-2000:], res.stderr[-2000:], [])


def call_with_headers(c: Cluster, caller: str, headers: list[str], local_ip: str, expect: int) -> sipp.SippResult:
    """A call to WELCOME whose INVITE carries ``headers`` besides SIPp's; ``ok`` when it is refused with
    ``expect``."""
    work = Path(tempfile.mkdtemp(prefix="sipp-headers-"))
    text = sipp.scenario([], caller=caller, work=work, expect=expect)
    extra = "".join(f"      {header}\n" for header in headers)
    text = text.replace("      Call-ID: [call_id]\n      CSeq: 1 INVITE",
                        f"{extra}      Call-ID: [call_id]\n      CSeq: 1 INVITE", 1)
    assert all(header in text for header in headers)
    return run_scenario(c, work, text, local_ip)


_REINVITE = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "33612345678" <sip:33612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: sip:33612345678@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "33612345678" <sip:33612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""


def carrier_call(c: Cluster) -> sipp.SippResult:
    """The carrier's call to WELCOME, answered, then a re-INVITE and a BYE from the carrier: requests within the
    call, which Kamailio sends on without the header (the node knows them by their dialog)."""
    work = Path(tempfile.mkdtemp(prefix="sipp-carrier-"))
    text = sipp.scenario([("pause", 300), ("bye", None)], work=work)
    assert "CSeq: 2 BYE" in text and '<pause milliseconds="300"/>' in text
    text = text.replace("CSeq: 2 BYE", "CSeq: 3 BYE").replace('  <pause milliseconds="300"/>\n',
                                                                f'  <pause milliseconds="300"/>\n{_REINVITE}', 1)
    return run_scenario(c, work, text, CARRIER_IP)


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

    # The carrier's own call to the same number reaches a node and is answered; the carrier's re-INVITE and BYE
    # within the call are answered too.
    answered = carrier_call(c)
    assert answered.ok, answered.stdout
    wait_for(lambda: len(calls_started(c)) == 1, 15, "the carrier's call started on a node")
    wait_for(lambda: sum(len(c.calls_finished(n)) for n in range(len(c.engines))) == 1, 15,
             "the carrier's call finished")

    # A request that looks like a SIP user's (by its From user alone) from outside the carrier networks passes
    # the edge; a node that knows no such user finds no endpoint for it (Kamailio's address identifies nothing)
    # and challenges it: never the carrier's call, whatever identity it asserts.
    posing = call_with_headers(c, "u000000000000000", ["P-Asserted-Identity: <sip:+33612349999@[local_ip]>"],
                               IMPOSTOR_IP, expect=401)
    assert posing.ok, posing.stdout
    # The same with the carrier's header and the cluster's real token: Kamailio removed it, challenged again.
    forged = call_with_headers(c, "u000000000000000", [f"{CARRIER_HEADER}: {c.kamailio.carrier_token}"],
                               IMPOSTOR_IP, expect=401)
    assert forged.ok, forged.stdout
    assert len(calls_started(c)) == 1  # only the carrier's call ever reached Stasis

    # A SIP user from an address that is not a carrier's still registers and calls (digest at the node).
    user = billed_user(c.database_url)
    name, password = user["sip_username"], user["sip_password"]
    register_and_call(c, name, password)
    assert not any(e.tracebacks() for e in c.engines)
