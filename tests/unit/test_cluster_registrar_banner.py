"""`make cluster`'s banner sends softphones to Kamailio (docs/scaling.md, "SIP users through Kamailio")."""

from __future__ import annotations

from pathlib import Path

from scripts.cluster import KamailioInstance, _cluster_lines
from scripts.devstack import AsteriskInstance


def test_the_cluster_banner_tells_softphones_to_register_to_kamailio_not_to_a_node(tmp_path: Path) -> None:
    nodes = [AsteriskInstance(f"cluster-{n}", sip_bind=f"127.0.1.{n}", sip_port=6060 + 100 * n) for n in (1, 2)]
    kamailio = KamailioInstance(tmp_path, [f"{node.sip_bind}:{node.sip_port}" for node in nodes], listen_port=5062)
    envs = [{"CALLCTL_HTTP_LISTEN": f"127.0.0.1:{8099 + 100 * n}"} for n in (1, 2)]
    text = _cluster_lines(kamailio, nodes, envs)
    assert "Softphones register to Kamailio (127.0.0.1:5062), never to a node" in text
    assert "127.0.1.1:6160" in text and "127.0.1.2:6260" in text
