"""ARI REST over the events websocket (Asterisk 22.4+ RESTRequest/RESTResponse) on a real Asterisk:
calls work over it; cutting the sockets mid-request fails every request in flight at once with the
project's ARI error and the client reconnects; requests then work again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from callctl.ari.client import AriClient
from callctl.config import Settings
from callctl.errors import AriUnavailable
from scripts.devstack import AsteriskInstance
from tests.support import sipp
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

WELCOME = "+33900000001"  # answer, hello-world, hang up


@pytest.fixture
def proxy(asterisk: AsteriskInstance) -> Iterator[CuttableProxy]:
    p = CuttableProxy(("127.0.0.1", asterisk.http_port))
    yield p
    p.close()


def test_a_call_is_answered_played_and_hung_up_with_requests_over_the_websockets(
        daemon_factory: Any, asterisk: AsteriskInstance) -> None:
    d = daemon_factory(ari_rest_transport="websocket", ari_rest_sockets="2")
    d.wait_until_ready()
    assert d.events("ari_connected")[0]["rest"] == "websocket x2"
    result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)], caller="0612345678")
    assert result.ok, result.stderr
    assert result.talk_s() > 0.9  # answered, the prompt played to its end, then the engine hung up
    assert d.wait_for_log("call_finished")["outcome"] == "completed"
    assert not d.events("ari_rest_over_websocket_unavailable") and not d.tracebacks()


def test_cutting_the_sockets_mid_request_fails_requests_in_flight_at_once_then_reconnects(
        asterisk: AsteriskInstance, proxy: CuttableProxy) -> None:
    settings = Settings(ari_url=f"http://127.0.0.1:{proxy.port}/", ari_user=asterisk.ari_user,
                        ari_password=asterisk.ari_password, ari_app=asterisk.ari_app + "-wsrest",
                        reconnect_min_s=0.05, reconnect_max_s=0.2, ari_heartbeat_s=5.0,
                        ari_rest_transport="websocket", ari_rest_sockets=1,
                        ari_request_timeout_s=600.0)
    resyncs: list[float] = []

    async def on_connected() -> None:
        resyncs.append(time.monotonic())

    async def main() -> None:
        async with AriClient(settings, lambda _e: None, on_connected, lambda: None) as ari:
            await wait_for_async(ari.connected.is_set, "connected", 20)
            assert (await ari.asterisk_info()).get("system")  # a request over the websocket, answered
            # Asterisk serves one request at a time per socket: a burst of slow ones (it lists every
            # sound file for each) queues there, in flight. Through the adapter's one request funnel.
            burst = [asyncio.create_task(ari._request("GET", "sounds")) for _ in range(200)]
            await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)
            proxy.cut()
            done, pending = await asyncio.wait(burst, timeout=30)  # not the 600 s of their own timeout
            assert not pending, f"{len(pending)} requests still waiting after the cut"
            failed = [t.exception() for t in done if t.exception() is not None]
            assert failed, "the cut caught no request in flight"
            assert all(isinstance(e, AriUnavailable) for e in failed), {type(e) for e in failed}
            assert any("in flight" in str(e) for e in failed), failed[:3]
            await wait_for_async(lambda: ari.reconnects >= 1 and ari.connected.is_set() and len(resyncs) >= 2,
                                 "reconnected and resynchronised", 20)
            assert (await ari.asterisk_info()).get("system")  # requests work again on the new sockets

    asyncio.run(main())
