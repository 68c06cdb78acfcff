"""The ARI connection through 100 reconnects (issue 15, item 15): some cut once connected, some cut in
the middle of connecting. Nothing leaks (file descriptors and sockets of the daemon flat) and nothing
but JSON lines leaves the daemon (no plain-text 'Unclosed client session' from asyncio)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

RECONNECTS = 100


@pytest.fixture
def proxy(asterisk: AsteriskInstance) -> Iterator[CuttableProxy]:
    p = CuttableProxy(("127.0.0.1", asterisk.http_port))
    yield p
    p.close()


def _fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of the process."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return len(links), sum(1 for link in links if link.startswith("socket:"))


def test_a_hundred_reconnects_leak_nothing_and_log_only_json(daemon_factory: Any, proxy: CuttableProxy) -> None:
    d = daemon_factory(ari_url=f"http://127.0.0.1:{proxy.port}/", reconnect_min_s="0.02", reconnect_max_s="0.1",
                       ari_heartbeat_s="5")
    d.wait_until_ready()
    assert d.proc is not None
    pid = d.proc.pid

    def reconnect(i: int) -> None:
        before = len(d.events("ari_connected"))
        if i % 2:
            proxy.fail_next(1)  # the next connection breaks in the middle of aioari's start-up requests
        proxy.cut()
        wait_for(lambda: len(d.events("ari_connected")) > before, 20, f"reconnect {i}")

    for i in range(6):  # warm-up: pools and caches reach their working size
        reconnect(i)
    wait_for(lambda: d.get("/readyz")[0] == 200, 10, "ready")
    fds_before, sockets_before = _fds(pid)
    for i in range(RECONNECTS):
        reconnect(i)
    wait_for(lambda: d.get("/readyz")[0] == 200, 10, "ready")
    assert len(d.events("ari_connected")) >= RECONNECTS
    assert d.events("ari_unavailable"), "some reconnects broke in the middle of connecting"
    fds_after, sockets_after = _fds(pid)
    assert fds_after <= fds_before + 2 and sockets_after <= sockets_before + 2, \
        (fds_before, fds_after, sockets_before, sockets_after)
    unparsed = [e["text"] for e in d.lines if e.get("event") == "_unparsed"]
    assert not unparsed, unparsed
    reports = []
    for line in d.stderr:  # what journald gets from stderr is JSON too
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        reports.append(entry)
    leaks = [e for e in reports + d.lines if "Unclosed" in str(e.get("event"))]
    assert not leaks, leaks[:3]  # no aiohttp session (or connector) left open by a failed attempt
    assert not d.tracebacks()
