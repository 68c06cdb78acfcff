"""Conference affinity's pure parts (issue 18): the member pass a hop carries, which channels are
peer nodes' hops, and the inter-node endpoints the set-up writes."""

from __future__ import annotations

import re
import uuid

import pytest

from callctl.conference.affinity import MemberPass, endpoint_of, nodes_conf, peer_of
from callctl.errors import ConfigError

WHERE = "PJSIP/callctl-node-a-00000001"


def a_pass() -> MemberPass:
    return MemberPass(uuid.uuid4(), "o'brien+x@example.com", "participant", str(uuid.uuid4()), "fr", "+33612345678")


def test_member_pass_survives_the_header_round_trip() -> None:
    sent = a_pass()
    text = sent.encode()
    assert ";" not in sent.person and " " not in text
    assert MemberPass.decode(text, WHERE) == sent


@pytest.mark.parametrize(("text", "problem"), [
    (None, "no X-Callctl-Member header"),
    ("conference=1;person=a", "lacks role, leg, language, caller"),
    ("conference=1;admin=yes", "unknown part 'admin'"),
])
def test_a_bad_member_pass_is_refused_naming_the_channel(text: str | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as exc:
        MemberPass.decode(text, WHERE)
    assert str(exc.value).startswith(WHERE + ": ")


def test_a_member_pass_with_an_unknown_role_or_a_bad_conference_is_refused() -> None:
    good = a_pass()
    with pytest.raises(ValueError, match="role 'admin' is neither organizer nor participant"):
        MemberPass.decode(good.encode().replace("role=participant", "role=admin"), WHERE)
    with pytest.raises(ValueError, match="conference 'x' is not an id"):
        MemberPass.decode(good.encode().replace(f"conference={good.conference_id}", "conference=x"), WHERE)


def test_only_channels_of_a_peer_node_endpoint_are_hops() -> None:
    assert peer_of("PJSIP/callctl-node-b-0000002a") == "b"
    assert peer_of("PJSIP/callctl-node-node-2.example-0000002a") == "node-2.example"
    assert peer_of("PJSIP/local-peer-0000002a") is None
    assert peer_of("PJSIP/demo-0000002a") is None
    assert peer_of("Local/callctl-node-b@x-0000;1") is None


def test_a_node_id_that_cannot_name_an_endpoint_is_a_config_error() -> None:
    assert endpoint_of("node-2.example") == "callctl-node-node-2.example"
    with pytest.raises(ConfigError, match="node id 'a b' cannot name an inter-node SIP endpoint"):
        endpoint_of("a b")


def test_nodes_conf_names_each_peer_by_address_only() -> None:
    text = nodes_conf({"b": "10.0.0.12:5060"})
    assert "[callctl-node-b](node-defaults)" in text
    assert "contact = sip:10.0.0.12:5060" in text and "match = 10.0.0.12\n" in text
    with pytest.raises(ConfigError, match=re.escape("node 'b': SIP address '10.0.0.12' must be HOST:PORT")):
        nodes_conf({"b": "10.0.0.12"})
