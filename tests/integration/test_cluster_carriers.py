"""Carriers behind Kamailio (docs/security.md, "Behind Kamailio"): the nodes take every request from Kamailio's
address as their trusted carrier (no authentication, caller ID believed), so Kamailio accepts a request that is
neither a SIP user's nor a node's only from the carriers' networks: an impostor's call to an access number gets
403 at the edge and never reaches a node, the carrier's is answered, a SIP user from any address still
registers and calls."""

from __future__ import annotations

import pytest

from scripts.devstack import free_port_pair
from tests.integration.test_cluster_bruteforce import billed_user
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.cluster import Cluster
from tests.support.edge_cluster import CARRIER_IP, EDGE_IP, guarded_cluster
from tests.support.registrar import PHONE_IP, register

pytestmark = pytest.mark.integration
__all__ = ["guarded_cluster"]  # the fixture, imported for this module

WELCOME = "+33900000001"  # an access number: answer, hello-world, hang up
IMPOSTOR_IP = "127.0.0.9"  # anywhere on the Internet but the carrier's SBC


def calls_started(c: Cluster) -> list[dict[str, object]]:
    return [e for engine in c.engines for e in engine.events("call_started")]


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

    # A SIP user from an address that is not a carrier's still registers and calls (digest at the node).
    user = billed_user(c.database_url)
    name, password = user["sip_username"], user["sip_password"]
    reg = register(c.sip_port, name, password, free_port_pair(), proxy_ip=EDGE_IP)
    assert reg.ok, reg.stderr
    trunks = [sipp.start_far_end(node.trunk_port, "answer") for node in c.nodes]
    call = sipp.call(c.sip_port, "0123456789", [("pause", 1000), ("bye", None)], caller=name,
                     auth=(name, password), local_ip=PHONE_IP, remote_ip=EDGE_IP)
    assert call.ok, call.stderr
    for trunk in trunks:
        trunk[0].kill()
        sipp.finish(*trunk, timeout_s=10)
    assert not any(e.tracebacks() for e in c.engines)
