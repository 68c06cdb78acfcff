"""A bounded cluster for real-component tests: Kamailio in front of two Asterisk nodes, one engine per
node, all on one test PostgreSQL database (docs/scaling.md). Free ports and an RTP range of its own
per node, so it runs beside the session Asterisk and other workers."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.cluster import KamailioInstance, node_instance
from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.asterisk import Daemon, daemon_factory, render_prompts, wait_for

__all__ = ["Cluster", "cluster", "free_rtp_range"]

NODES = 2


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """An even-aligned UDP range of ``size`` ports of which none is bound now, away from the session
    Asterisk's (tests.support.asterisk) and from the kernel's ephemeral ports (32768 and up)."""
    for _ in range(50):
        start = random.randrange(10000, 30000 - size, 2)
        if start < 20000 + 2000 and start + size > 20000:  # make run's default range
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(start, start + size, 10):
                    s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return start, start + size - 1
    raise RuntimeError("no free RTP range")


@dataclass
class Cluster:
    kamailio: KamailioInstance
    nodes: list[AsteriskInstance]
    engines: list[Daemon]
    database_url: str

    @property
    def sip_port(self) -> int:
        """Where callers send their calls: Kamailio."""
        return self.kamailio.listen_port

    def node_address(self, n: int) -> str:
        return f"127.0.0.1:{self.nodes[n].sip_port}"

    def wait_for_rotation(self, active: set[int], timeout_s: float = 15) -> None:
        """Until exactly the nodes numbered ``active`` (0-based) are in Kamailio's rotation."""
        want = {self.node_address(n) for n in active}
        wait_for(lambda: self.kamailio.active_nodes() == want, timeout_s,
                 f"nodes {sorted(want)} active in Kamailio (now {self.kamailio.node_states()})", interval_s=0.1)

    def calls_finished(self, n: int) -> list[dict[str, object]]:
        return self.engines[n].events("call_finished")


@pytest.fixture
def cluster(tmp_path: Path, database_url: str) -> Iterator[Cluster]:
    ensure_root()
    nodes: list[AsteriskInstance] = []
    kamailio: KamailioInstance | None = None
    factories: list[contextlib.AbstractContextManager[Callable[..., Daemon]]] = []
    engines: list[Daemon] = []
    try:
        for n in range(1, NODES + 1):
            rtp_start, rtp_end = free_rtp_range()
            node = node_instance(f"test-{os.getpid()}-c{n}-{tmp_path.name[-12:]}", n, http_port=free_port(),
                                 sip_port=free_port_pair(), rtp_start=rtp_start, rtp_end=rtp_end,
                                 trunk_port=free_port_pair(), emergency_port=free_port_pair())
            node.use_database(database_url)
            nodes.append(node)
        with ThreadPoolExecutor(NODES + 1) as pool:  # the nodes boot side by side (about 5 s each)
            booted = [pool.submit(node.start) for node in nodes]
            booted.append(pool.submit(render_prompts, nodes[0]))  # the shared root's sounds: once is enough
            for future in booted:
                future.result()
        kamailio = KamailioInstance(Path(tempfile.mkdtemp(prefix="kamailio-", dir=tmp_path)),
                                    [f"127.0.0.1:{node.sip_port}" for node in nodes], listen_port=free_port_pair(),
                                    debug=2)
        kamailio.start()
        for n, node in enumerate(nodes):
            workdir = tmp_path / f"engine{n + 1}"
            workdir.mkdir()
            factory = contextlib.contextmanager(daemon_factory.__wrapped__)(workdir, node, database_url)  # type: ignore[attr-defined]
            factories.append(factory)
            # A node whose ARI is gone for 2 s has lost its Asterisk (the default, 10 s, is for real networks).
            engines.append(factory.__enter__()(NODE_ID=f"node{n + 1}", ARI_LOST_CALLS_AFTER_S="2",
                                               SHUTDOWN_GRACE_S="5"))
        for engine in engines:
            engine.wait_until_ready()
        c = Cluster(kamailio, nodes, engines, database_url)
        c.wait_for_rotation(set(range(NODES)))
        yield c
    finally:
        for factory in reversed(factories):
            factory.__exit__(None, None, None)
        if kamailio is not None:
            kamailio.stop()
            # Shown by pytest only when the test failed.
            print("--- kamailio log (last 40 lines) ---", *kamailio.log_file.read_text(errors="replace")
                  .splitlines()[-40:], sep="\n")
        for node in nodes:
            node.stop()
