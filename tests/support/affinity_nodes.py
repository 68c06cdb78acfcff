"""Two callctl nodes on one PostgreSQL for the conference affinity tests (issue 18): two Asterisk
instances (free ports, distinct names and RTP ranges, SIP on their own loopback addresses so each one
is identified by the other by address alone), each listing the other in pjsip_nodes.conf, and an
engine per node started with the suite's Daemon class. Bounded: the instances live for the module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callctl.conference.affinity import nodes_conf
from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair, free_rtp_range
from tests.support.asterisk import Daemon, engine_env, render_prompts
from tests.support.postgres import PostgresCluster, migrated_template

NODES = {"a": "127.0.0.2", "b": "127.0.0.3"}  # node id -> the SIP address its Asterisk listens on
LEASE_S = 3  # short, so a takeover is seen within a test


@dataclass
class Node:
    node_id: str
    asterisk: AsteriskInstance
    sip_ip: str


@contextlib.contextmanager
def running_nodes(node_ips: dict[str, str] = NODES) -> Iterator[dict[str, Node]]:
    """The nodes' Asterisk instances, started side by side, each listing the others as peers; stopped
    on leaving (also used by bench/conference_hop.py)."""
    ensure_root()
    nodes: dict[str, Node] = {}
    for node_id, ip in node_ips.items():
        start, end = free_rtp_range()
        inst = AsteriskInstance(f"test-{os.getpid()}-node-{node_id}", http_port=free_port(),
                                sip_port=free_port_pair(), sip_bind=ip, rtp_start=start, rtp_end=end,
                                trunk_port=free_port_pair())
        nodes[node_id] = Node(node_id, inst, ip)
    for node in nodes.values():
        peers = {other.node_id: f"{other.sip_ip}:{other.asterisk.sip_port}"
                 for other in nodes.values() if other is not node}
        node.asterisk.extra_conf["pjsip_nodes.conf"] = nodes_conf(peers)
    instances = [node.asterisk for node in nodes.values()]
    try:
        # Side by side: the boots and the prompts (one shared root serves every instance).
        with concurrent.futures.ThreadPoolExecutor(len(instances) + 1) as pool:
            jobs = [pool.submit(inst.start) for inst in instances]
            jobs.append(pool.submit(render_prompts, instances[0]))
            for job in jobs:
                job.result()
        yield nodes
    finally:
        for inst in instances:
            inst.stop()


@pytest.fixture(scope="module")
def affinity_nodes() -> Iterator[dict[str, Node]]:
    with running_nodes() as nodes:
        yield nodes


@pytest.fixture(scope="module")
def cluster_database(postgres: PostgresCluster) -> str:
    """The nodes' one database, for the module (the engines outlive a test), migrations applied."""
    postgres.start()
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template(postgres)}"')
    return postgres.url_for(name)


@pytest.fixture(scope="module")
def node_engines(affinity_nodes: dict[str, Node], cluster_database: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    """An engine per node, started side by side and connected to its Asterisk, for the module: tests
    tell their calls apart by conference (a test that kills an engine runs last)."""
    work = tmp_path_factory.mktemp("engines")
    engines = {node_id: launch_engine(node.asterisk, node_id, cluster_database, work / node_id)
               for node_id, node in affinity_nodes.items()}
    try:
        for d in engines.values():
            d.wait_until_ready()
        yield engines
    finally:
        for node_id, d in engines.items():
            d.stop()
            d.close_pipes()
            print(f"--- engine {node_id} log ({len(d.raw)} lines, last 60) ---", *d.raw[-60:], *d.stderr[-20:],
                  sep="\n")


def launch_engine(inst: AsteriskInstance, node_id: str, database_url: str, work: Path) -> Daemon:
    """``node_id``'s engine on ``inst`` (started, not yet connected: ``wait_until_ready``)."""
    work.mkdir()
    env = engine_env(inst, database_url, work, shutdown_grace_s="10", node_id=node_id,
                     conference_lease_s=str(LEASE_S))
    return Daemon(env, work).start()
