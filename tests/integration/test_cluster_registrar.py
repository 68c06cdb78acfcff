"""SIP users through Kamailio (docs/scaling.md, "SIP users through Kamailio"): a phone registers through
Kamailio with one node (its home node), any node's call to the user reaches the phone through Kamailio
(the Path stored with the contact in PostgreSQL), the user's own calls land on its home node, and when
that node dies the others still reach the phone and its next REGISTER moves it to the next node."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from scripts.devstack import free_port_pair
from tests.integration.test_daemon import cdr_rows, wait_for_cdrs
from tests.integration.test_lines_calls import DID, line_user
from tests.integration.test_lines_cli import db
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.cluster import Cluster, cluster
from tests.support.registrar import PHONE_IP, PRIVATE_CONTACT, register, start_call_behind_nat, start_phone

pytestmark = pytest.mark.integration
__all__ = ["cluster"]  # the fixture, imported for this module


def first_request(result: sipp.SippResult, method: str, direction: str = "UDP message received") -> str:
    """The first ``method`` request SIPp received (or sent, ``direction``), as text."""
    for _at, text in result.messages:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith(direction) and lines[1].startswith(f"{method} "):
            return "\n".join(lines[1:])
    raise AssertionError(f"no {method} in the trace: {[t[:200] for _a, t in result.messages]}")


def first_request_sent(result: sipp.SippResult, method: str) -> str:
    return first_request(result, method, "UDP message sent")


def header(message: str, name: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in message.splitlines()
            if line.lower().startswith(f"{name.lower()}:")]


def home_node(c: Cluster, reg_server: str) -> int:
    """The node whose Asterisk stored the contact (its system name is callctl-<instance name>)."""
    [n] = [n for n, node in enumerate(c.nodes) if reg_server == f"callctl-{node.name}"]
    return n


def test_a_user_registered_through_kamailio_is_rung_from_any_node_and_calls_from_its_home_node_or_the_next(
        cluster: Cluster) -> None:
    user = line_user(cluster.database_url, credit="10")
    name, password = user["sip_username"], user["sip_password"]
    kamailio = f"127.0.0.1:{cluster.sip_port}"
    phone_port = free_port_pair()

    # The phone registers through Kamailio: challenged and answered by one node (the hash of its name),
    # which stores the contact with Kamailio's Path (and the address the phone registered from).
    reg = register(cluster.sip_port, name, password, phone_port)
    assert reg.ok, reg.stderr
    [contact] = db(cluster.database_url, "SELECT uri, path, reg_server FROM ps_contacts WHERE endpoint = $1", name)
    path = contact["path"].replace("^3B", ";")  # realtime stores ';' as ^3B
    assert path == f"<sip:{kamailio};lr;received=sip:{PHONE_IP}:{phone_port}>", contact
    home = home_node(cluster, contact["reg_server"])
    other = 1 - home

    # A PSTN call to the user's number arrives on the OTHER node: it finds the contact in PostgreSQL and
    # sends the INVITE along the Path, through Kamailio, to the phone, which answers.
    phone = start_phone(phone_port)
    result = sipp.call(cluster.nodes[other].sip_port, DID, [("pause", 1500), ("bye", None)], caller="0612345678")
    assert result.ok, result.stderr
    rung = sipp.finish(*phone)
    assert rung.ok, rung.stderr
    invite = first_request(rung, "INVITE")
    vias = header(invite, "Via")
    assert vias[0].split()[1].startswith(kamailio), vias  # sent by Kamailio ...
    assert f"127.0.0.1:{cluster.nodes[other].sip_port}" in vias[1], vias  # ... for the other node
    assert any(kamailio in rr for rr in header(invite, "Record-Route")), invite  # in-dialog stays on Kamailio
    # The node's BYE (the caller hung up) came through Kamailio too, along the route set.
    bye = first_request(rung, "BYE")
    assert header(bye, "Via")[0].split()[1].startswith(kamailio), bye

    wait_for(lambda: len(cluster.calls_finished(other)) == 1, 20, "the call finished on the other node")
    rows = wait_for_cdrs(cluster.database_url, 2)
    assert sorted(r["direction"] for r in rows) == ["inbound", "outbound"], rows
    assert len({r["call_id"] for r in rows}) == 1 and {r["disposition"] for r in rows} == {"ANSWERED"}
    assert {str(r["user_id"]) for r in rows} == {user["id"]}
    assert cluster.engines[home].events("call_started") == []  # the home node took no part

    # The user's own call, sent to Kamailio, lands on its home node (the hash of its name) and is billed.
    trunks = [sipp.start_far_end(node.trunk_port, "answer") for node in cluster.nodes]
    result = sipp.call(cluster.sip_port, "0123456789", [("pause", 1500), ("bye", None)], caller=name,
                       auth=(name, password), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    far = sipp.finish(*trunks[home])
    assert far.ok, far.stderr
    trunks[other][0].kill()
    assert "INVITE sip:" not in "".join(text for _at, text in sipp.finish(*trunks[other], timeout_s=10).messages)
    wait_for(lambda: len(cluster.calls_finished(home)) == 1, 20, "the user's call finished on its home node")
    rows = wait_for_cdrs(cluster.database_url, 4)
    assert len(rows) == 4, rows  # each leg written once
    outbound: dict[str, Any] = next(r for r in rows
                                    if r["direction"] == "outbound" and r["to_number"] == "+33123456789")
    assert outbound["rate_per_minute"] == Decimal("0.60") and outbound["billed_s"] >= 1
    assert outbound["cost"] == (Decimal("0.60") * outbound["billed_s"] / 60).quantize(Decimal("0.0001"))
    [credit] = db(cluster.database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert (credit["balance"], credit["reserved"]) == (10 - outbound["cost"], 0)
    assert len(cdr_rows(cluster.database_url)) == 4

    # The same phone behind NAT (its Contact a private address) calls out and the far end hangs up: the
    # node's BYE reaches the phone through Kamailio, at the address the phone sent from (;alias).
    trunk = sipp.start_far_end(cluster.nodes[home].trunk_port, "hang_up", talk_ms=1000)
    natted = sipp.finish(*start_call_behind_nat(cluster.sip_port, name, password, "0123456789"))
    assert natted.ok, natted.stderr
    assert sipp.finish(*trunk).ok
    assert PRIVATE_CONTACT in first_request_sent(natted, "INVITE")
    assert header(first_request(natted, "BYE"), "Via")[0].split()[1].startswith(kamailio)
    assert len(wait_for_cdrs(cluster.database_url, 6)) == 6

    # The home node dies (kill -9). The contact stays in PostgreSQL, naming the dead node, and the phone's
    # binding is Kamailio's: the surviving node still reaches the phone through Kamailio.
    dying = cluster.nodes[home].proc
    assert dying is not None
    dying.kill()
    dying.wait(10)
    cluster.wait_for_rotation({other}, timeout_s=10)
    phone = start_phone(phone_port)
    result = sipp.call(cluster.nodes[other].sip_port, DID, [("pause", 1500), ("bye", None)], caller="0612345678")
    assert result.ok, result.stderr
    rung = sipp.finish(*phone)
    assert rung.ok, rung.stderr
    assert header(first_request(rung, "INVITE"), "Via")[0].split()[1].startswith(kamailio)
    # The phone's next REGISTER goes to the next node of the set, which takes the contact over; the
    # user's own calls follow it there.
    reg = register(cluster.sip_port, name, password, phone_port)
    assert reg.ok, reg.stderr
    [contact] = db(cluster.database_url, "SELECT reg_server FROM ps_contacts WHERE endpoint = $1", name)
    assert home_node(cluster, contact["reg_server"]) == other
    trunk = sipp.start_far_end(cluster.nodes[other].trunk_port, "answer")
    result = sipp.call(cluster.sip_port, "0123456789", [("pause", 1000), ("bye", None)], caller=name,
                       auth=(name, password), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    assert sipp.finish(*trunk).ok
    assert len(wait_for_cdrs(cluster.database_url, 10)) == 10
