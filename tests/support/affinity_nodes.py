"""Two callctl nodes on one PostgreSQL for the conference affinity tests (issue 18): two Asterisk
instances (free ports, distinct names and RTP ranges, SIP on their own loopback addresses so each one
is identified by the other by address alone), each listing the other in pjsip_nodes.conf, and an
engine per node started with the suite's Daemon class. Bounded: the instances live for the module.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callctl.conference.affinity import nodes_conf
from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.asterisk import Daemon, render_prompts

NODES = {"a": "127.0.0.2", "b": "127.0.0.3"}  # node id -> the SIP address its Asterisk listens on
LEASE_S = 3  # short, so a takeover is seen within a test


def _rtp_range(size: int = 200) -> tuple[int, int]:
    """A range of UDP ports starting at a port that is free now (Asterisk retries a taken one)."""
    start = min(free_port(socket.SOCK_DGRAM), 64000) & ~1
    return start, start + size


@dataclass
class Node:
    node_id: str
    asterisk: AsteriskInstance
    sip_ip: str


@pytest.fixture(scope="module")
def affinity_nodes() -> Iterator[dict[str, Node]]:
    ensure_root()
    nodes: dict[str, Node] = {}
    for node_id, ip in NODES.items():
        start, end = _rtp_range()
        inst = AsteriskInstance(f"test-{os.getpid()}-node-{node_id}", http_port=free_port(),
                                sip_port=free_port_pair(), sip_bind=ip, rtp_start=start, rtp_end=end,
                                trunk_port=free_port_pair())
        nodes[node_id] = Node(node_id, inst, ip)
    for node in nodes.values():
        peers = {other.node_id: f"{other.sip_ip}:{other.asterisk.sip_port}"
                 for other in nodes.values() if other is not node}
        node.asterisk.extra_conf["pjsip_nodes.conf"] = nodes_conf(peers)
    started: list[AsteriskInstance] = []
    try:
        for node in nodes.values():
            node.asterisk.start()
            started.append(node.asterisk)
        render_prompts(started[0])  # one shared root: the prompts serve every instance
        yield nodes
    finally:
        for inst in started:
            inst.stop()


@pytest.fixture
def node_engines(affinity_nodes: dict[str, Node], database_url: str,
                 tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    """``start(node_id)``: that node's engine, started (stopped at the end of the test)."""
    started: list[Daemon] = []

    def start(node_id: str) -> Daemon:
        inst = affinity_nodes[node_id].asterisk
        work = tmp_path / f"engine-{node_id}-{len(started)}"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
        env.update({
            "CALLCTL_DATABASE_URL": database_url,
            "CALLCTL_ARI_URL": inst.ari_url,
            "CALLCTL_ARI_USER": inst.ari_user,
            "CALLCTL_ARI_PASSWORD": inst.ari_password,
            "CALLCTL_ARI_APP": inst.ari_app,
            "CALLCTL_DIALPLAN_DIR": str(REPO / "dialplan"),
            "CALLCTL_SPOOL_DIR": str(work / "spool"),
            "CALLCTL_RUNTIME_DIR": str(work / "run"),
            "CALLCTL_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_AGI_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_SPACE_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_SHUTDOWN_GRACE_S": "10",
            "CALLCTL_RECONNECT_MAX_S": "2",
            "CALLCTL_ARI_HEARTBEAT_S": "2",
            "CALLCTL_LOG_LEVEL": "info",
            "CALLCTL_NODE_ID": node_id,
            "CALLCTL_CONFERENCE_LEASE_S": str(LEASE_S),
        })
        d = Daemon(env, work)
        started.append(d)
        d.start()
        d.wait_until_ready()
        return d

    yield start
    for d in started:
        d.stop()
        d.close_pipes()
        print(f"--- engine log ({len(d.raw)} lines, last 60) ---", *d.raw[-60:], *d.stderr[-20:], sep="\n")
