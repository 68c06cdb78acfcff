"""Two nodes sharing one PostgreSQL, without Kamailio (SIPp calls each node straight): two Asterisk
instances (free ports, distinct names, entity ids and RTP ranges, realtime SIP users from the test's
database) and one engine per node (``callctl run`` with its own node id, spool and runtime folders).

Import the fixtures into the test module (``from tests.support.nodes import nodes_database_url, two_nodes``);
tests of one module share the nodes and their database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair, free_rtp_range
from tests.support.asterisk import Daemon, engine_env
from tests.support.postgres import PostgresCluster, migrated_template


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
        # Short leases, still longer than an engine restart on a loaded machine: a dead node's slots
        # and open calls are another engine's within seconds.
        settings = {"node_id": self.node_id, "shutdown_grace_s": "10", "node_lease_s": "10",
                    "node_takeover_s": "10", **overrides}
        return engine_env(self.asterisk, self.database_url, self.workdir, **settings)

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
