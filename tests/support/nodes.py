"""Two nodes sharing one PostgreSQL, without Kamailio (SIPp calls each node straight): two Asterisk
instances (free ports, distinct names, entity ids and RTP ranges, realtime SIP users from the test's
database) and one engine per node (``callctl run`` with its own node id, spool and runtime folders).

Import the fixtures into the test module (``from tests.support.nodes import nodes_database_url, two_nodes``);
tests of one module share the nodes and their database."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.asterisk import Daemon
from tests.support.postgres import PostgresCluster, migrated_template

RTP_PORTS = 200  # per node: a few calls each


def free_rtp_range() -> tuple[int, int]:
    """An even-based range of RTP_PORTS ports starting at a port free now (the kernel picks it)."""
    base = free_port(socket.SOCK_DGRAM) & ~1
    base = min(base, 65534 - RTP_PORTS)
    return base, base + RTP_PORTS - 1


@dataclass
class Node:
    """One Asterisk and its engine; ``engine`` is started by ``start_engine`` (again after a kill)."""

    node_id: str
    asterisk: AsteriskInstance
    database_url: str
    workdir: Path
    engines: list[Daemon] = field(default_factory=list)

    @property
    def engine(self) -> Daemon:
        return self.engines[-1]

    def engine_env(self, **overrides: str) -> dict[str, str]:
        a = self.asterisk
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
        env.update({
            "CALLCTL_NODE_ID": self.node_id,
            "CALLCTL_DATABASE_URL": self.database_url,
            "CALLCTL_ARI_URL": a.ari_url, "CALLCTL_ARI_USER": a.ari_user,
            "CALLCTL_ARI_PASSWORD": a.ari_password, "CALLCTL_ARI_APP": a.ari_app,
            "CALLCTL_DIALPLAN_DIR": str(REPO / "dialplan"),
            "CALLCTL_SPOOL_DIR": str(self.workdir / "spool"),
            "CALLCTL_RUNTIME_DIR": str(self.workdir / "run"),
            "CALLCTL_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_AGI_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_SPACE_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_SHUTDOWN_GRACE_S": "10",
            "CALLCTL_RECONNECT_MAX_S": "2",
            "CALLCTL_ARI_HEARTBEAT_S": "2",
            "CALLCTL_LOG_LEVEL": "info",
            # Short leases, still longer than an engine restart on a loaded machine: a dead node's slots
            # and open calls are another engine's within seconds.
            "CALLCTL_NODE_LEASE_S": "10",
            "CALLCTL_NODE_TAKEOVER_S": "10",
        })
        env.update({f"CALLCTL_{k.upper()}": v for k, v in overrides.items()})
        return env

    def start_engine(self, **overrides: str) -> Daemon:
        engine = Daemon(self.engine_env(**overrides), self.workdir).start()
        self.engines.append(engine)
        return engine

    def stop(self) -> None:
        for engine in self.engines:
            engine.stop()
            engine.close_pipes()
            print(f"--- engine {self.node_id} log ({len(engine.raw)} lines, last 60) ---", *engine.raw[-60:],
                  *engine.stderr[-20:], sep="\n")
        self.asterisk.stop()


@pytest.fixture(scope="module")
def nodes_database_url(postgres: PostgresCluster) -> str:
    """The nodes' shared database, for the whole module (tests tell their rows apart by account)."""
    name = f"nodes_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template(postgres)}"')
    return postgres.url_for(name)


@pytest.fixture(scope="module")
def two_nodes(nodes_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    """Two nodes up, their engines connected, for the whole module (starting two Asterisks costs
    seconds); stopped (engines first) at its end."""
    ensure_root()
    database_url, tmp_path = nodes_database_url, tmp_path_factory.mktemp("nodes")
    nodes: list[Node] = []
    try:
        for i in (1, 2):
            rtp_start, rtp_end = free_rtp_range()
            inst = AsteriskInstance(f"node{i}-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                                    rtp_start=rtp_start, rtp_end=rtp_end, trunk_port=free_port_pair(),
                                    emergency_port=free_port_pair(),
                                    # Several Asterisks on one host need their own entity ids (credit holds
                                    # name the Asterisk they were taken on).
                                    extra_conf={"asterisk.conf": f"entityid = 02:00:00:00:18:0{i}\n"})
            inst.use_database(database_url)
            node = Node(f"node{i}", inst, database_url, tmp_path / f"node{i}")
            node.workdir.mkdir()
            nodes.append(node)
            inst.start()
        for node in nodes:
            node.start_engine()
        for node in nodes:
            node.engine.wait_until_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
