"""A cluster as `make cluster` sets it up for SIP brute force (docs/security.md, "Behind Kamailio"): Kamailio
on an address of its own (EDGE_IP, as a real proxy is not on the nodes' host), banning with the engines'
own sip_block_* settings; every node's AMI on, so each engine would block an address itself, with
Kamailio's address added to its sip_trusted_networks (scripts/cluster.py trusted_with). As a real deployment,
the nodes know their carrier by Kamailio's header with the cluster's token (`carrier_token`), never by Kamailio's
address, and Kamailio accepts carriers' requests from one address only, CARRIER_IP."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from callctl.config import load_settings
from callctl.fraud.settings import block_policy
from scripts.cluster import KamailioInstance, node_instance, trusted_with
from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair, free_rtp_range
from tests.support import sipp
from tests.support.asterisk import Daemon, engine_env, render_prompts
from tests.support.cluster import Cluster
from tests.support.registrar import PHONE_IP, register

__all__ = ["CARRIER_IP", "EDGE_IP", "EDGE_SETTINGS", "guarded_cluster", "register_and_call"]

EDGE_IP = "127.0.0.4"
# The carrier's SBC: the only source of calls that are not from a SIP user (kamailio.cfg route[CARRIER]).
CARRIER_IP = "127.0.0.8"
# The numbers every engine and Kamailio share: a short ban, so that a test could watch it end.
EDGE_SETTINGS = {"sip_block_failures": "4", "sip_block_window_s": "60", "sip_block_s": "20",
                 "sip_block_max_s": "600"}


@pytest.fixture
def guarded_cluster(tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    ensure_root()
    nodes: list[AsteriskInstance] = []
    engines: list[Daemon] = []
    kamailio: KamailioInstance | None = None
    token = secrets.token_hex(20)
    try:
        for n in (1, 2):
            rtp_start, rtp_end = free_rtp_range()
            node = node_instance(f"test-{os.getpid()}-g{n}-{tmp_path.name[-12:]}", n, http_port=free_port(),
                                 sip_port=free_port_pair(), rtp_start=rtp_start, rtp_end=rtp_end,
                                 trunk_port=free_port_pair(), emergency_port=free_port_pair(), ami_port=free_port(),
                                 carrier_token=token)
            node.use_database(database_url)
            nodes.append(node)
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(node.start) for node in nodes] + [pool.submit(render_prompts, nodes[0])]:
                future.result()
        envs = []
        for n, node in enumerate(nodes, start=1):
            (tmp_path / f"engine{n}").mkdir()
            env = engine_env(node, database_url, tmp_path / f"engine{n}", node_id=f"node{n}",
                             ari_lost_calls_after_s="2", shutdown_grace_s="5",
                             ami_address=f"127.0.0.1:{node.ami_port}", ami_user=node.ami_user,
                             ami_password=node.ami_password, **EDGE_SETTINGS)
            env["CALLCTL_SIP_TRUSTED_NETWORKS"] = trusted_with(load_settings(env=env).sip_trusted_networks, EDGE_IP)
            envs.append(env)
        kamailio = KamailioInstance(Path(tempfile.mkdtemp(prefix="kamailio-", dir=tmp_path)),
                                    [f"127.0.0.1:{node.sip_port}" for node in nodes], listen_address=EDGE_IP,
                                    listen_port=free_port_pair(), debug=2,
                                    guard=block_policy(load_settings(env=envs[0])),
                                    carrier_networks=(f"{CARRIER_IP}/32",), carrier_token=token)
        kamailio.start()
        for env in envs:
            env["CALLCTL_KAMAILIO_CTL"] = kamailio.ctl_socket
            engines.append(Daemon(env, tmp_path / f"engine{len(engines) + 1}"))
            engines[-1].start()
        for engine in engines:
            engine.wait_until_ready()
        c = Cluster(kamailio, nodes, engines, database_url)
        c.wait_for_rotation({0, 1})
        yield c
    finally:
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.stop()
            engine.close_pipes()
            print("--- daemon log (last 40) ---", *engine.raw[-40:], *engine.stderr[-10:], sep="\n")
        if kamailio is not None:
            kamailio.stop()
            print("--- kamailio log (last 60 lines) ---", *kamailio.log_file.read_text(errors="replace")
                  .splitlines()[-60:], sep="\n")
        for node in nodes:
            node.stop()


def register_and_call(c: Cluster, name: str, password: str) -> None:
    """The SIP user ``name`` registers from PHONE_IP through Kamailio and calls a PSTN number: a node's trunk
    answers, the user hangs up after a second."""
    reg = register(c.sip_port, name, password, free_port_pair(), proxy_ip=EDGE_IP)
    assert reg.ok, reg.stderr
    trunks = [sipp.start_far_end(node.trunk_port, "answer") for node in c.nodes]
    call = sipp.call(c.sip_port, "0123456789", [("pause", 1000), ("bye", None)], caller=name,
                     auth=(name, password), local_ip=PHONE_IP, remote_ip=EDGE_IP)
    assert call.ok, call.stderr
    for trunk in trunks:
        trunk[0].kill()
        sipp.finish(*trunk, timeout_s=10)
