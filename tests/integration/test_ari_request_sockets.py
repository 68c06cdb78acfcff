"""The ARI request websockets on a real Asterisk, with a real SIPp call held in Stasis: a channel command
that Asterisk holds (a variable set while a long prompt plays: Asterisk carries it out only when the
playback ends) keeps its socket silent for longer than the heartbeat without dropping anything; the
loss of one request socket fails only that socket's requests and reopens it alone (no reconnect, no
resynchronisation, events keep flowing); the loss of the events socket drops the connection as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest

from callctl.ari.client import AriClient
from callctl.ari.events import Event, StasisEnd, StasisStart
from callctl.ari.transport import RequestSocket
from callctl.config import Settings
from callctl.errors import AriUnavailable
from callctl.ids import ChannelId
from scripts.devstack import AsteriskInstance
from tests.support import sipp
from tests.support.ari_sockets import OneSocketProxy
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5
LONG_PROMPT = "sound:demo-congrats"  # about 20 s: a command queued behind it is held that long


@pytest.fixture
def proxy(asterisk: AsteriskInstance) -> Iterator[OneSocketProxy]:
    p = OneSocketProxy(("127.0.0.1", asterisk.http_port))
    yield p
    p.close()


@dataclass
class Seen:
    events: list[Event] = field(default_factory=list)
    resyncs: list[float] = field(default_factory=list)

    async def on_connected(self) -> None:
        self.resyncs.append(time.monotonic())


def _settings(asterisk: AsteriskInstance, port: int, sockets: int) -> Settings:
    # The session Asterisk's own app: the SIPp call below enters it (no daemon runs in these tests).
    return Settings(ari_url=f"http://127.0.0.1:{port}/", ari_user=asterisk.ari_user,
                    ari_password=asterisk.ari_password, ari_app=asterisk.ari_app, reconnect_min_s=0.05,
                    reconnect_max_s=0.2, ari_heartbeat_s=HEARTBEAT_S, ari_rest_transport="websocket",
                    ari_rest_sockets=sockets, ari_request_timeout_s=60.0)


@asynccontextmanager
async def _call_playing_a_long_prompt(ari: AriClient, seen: Seen, asterisk: AsteriskInstance
                                      ) -> AsyncIterator[ChannelId]:
    """A real SIPp call in Stasis, answered, a 20 s prompt playing; hung up at the end."""
    proc, work = await asyncio.to_thread(sipp.start_call, asterisk.sip_port, "+33900000001", [("wait_bye", None)])
    try:
        start = await wait_for_async(lambda: next((e for e in seen.events if isinstance(e, StasisStart)), None),
                                     "the call in Stasis", 20)
        channel = start.channel.id
        await ari.answer(channel)
        await ari.play(channel, [LONG_PROMPT], f"long-{channel}", "en")
        yield channel
        await ari.hang_up(channel)
        await wait_for_async(lambda: any(isinstance(e, StasisEnd) for e in seen.events), "the call's StasisEnd", 20)
    finally:
        await asyncio.to_thread(sipp.finish, proc, work, 30)


def _held(ari: AriClient, channel: ChannelId, name: str) -> asyncio.Task[None]:
    """A channel command Asterisk carries out only when the playback ends (or stops)."""
    return asyncio.create_task(ari.set_var(channel, name, "1"))


def _sockets(ari: AriClient) -> list[RequestSocket]:
    assert ari._requests is not None
    return list(ari._requests.sockets)


def time_now() -> float:
    return asyncio.get_running_loop().time()


def _port(ws: aiohttp.ClientWebSocketResponse | None) -> int:
    assert ws is not None
    return int(ws.get_extra_info("sockname")[1])


def test_a_command_held_by_a_long_prompt_keeps_every_socket_up_and_others_are_answered_meanwhile(
        asterisk: AsteriskInstance) -> None:
    seen = Seen()

    async def main() -> None:
        settings = _settings(asterisk, asterisk.http_port, sockets=2)
        async with AriClient(settings, seen.events.append, seen.on_connected, lambda: None) as ari:
            await wait_for_async(ari.connected.is_set, "connected", 20)
            async with _call_playing_a_long_prompt(ari, seen, asterisk) as channel:
                held = _held(ari, channel, "CALLCTL_HELD")
                # Silent for eight heartbeats: a pinged socket would have been closed by now.
                await asyncio.wait({held}, timeout=8 * HEARTBEAT_S)
                assert not held.done(), "the command was not held by the playback: the test proves nothing"
                # Requests keep being answered, none queued behind the held one (its socket is avoided).
                infos = await asyncio.gather(*(ari.asterisk_info() for _ in range(10)))
                assert all(i.get("system") for i in infos) and not held.done()
                assert [s.unanswered for s in _sockets(ari)] == [1, 0]
                # Both sockets held: requests take HTTP meanwhile, still answered at once.
                other = _held(ari, channel, "CALLCTL_OTHER")
                await wait_for_async(lambda: [s.unanswered for s in _sockets(ari)] == [1, 1], "both held")
                await wait_for_async(lambda: not ari._requests or not ari._requests.ready(time_now()), "both stalled")
                infos = await asyncio.gather(*(ari.asterisk_info() for _ in range(10)))
                assert all(i.get("system") for i in infos) and not held.done() and not other.done()
                assert [s.unanswered for s in _sockets(ari)] == [1, 1]  # none went behind the held ones
                assert ari.reconnects == 0 and len(seen.resyncs) == 1
                await ari.stop_playback(f"long-{channel}")
                await asyncio.wait_for(asyncio.gather(held, other), 20)  # carried out once the prompt stopped
                assert await ari.get_var(channel, "CALLCTL_HELD") == "1"
            assert ari.reconnects == 0 and len(seen.resyncs) == 1

    asyncio.run(main())


def test_losing_one_request_socket_fails_only_its_requests_and_reopens_it_alone(
        asterisk: AsteriskInstance, proxy: OneSocketProxy) -> None:
    seen = Seen()

    async def main() -> None:
        settings = _settings(asterisk, proxy.port, sockets=2)
        async with AriClient(settings, seen.events.append, seen.on_connected, lambda: None) as ari:
            await wait_for_async(ari.connected.is_set, "connected", 20)
            async with _call_playing_a_long_prompt(ari, seen, asterisk) as channel:
                first = _held(ari, channel, "CALLCTL_FIRST")
                await wait_for_async(lambda: [s.unanswered for s in _sockets(ari)] == [1, 0], "first held")
                second = _held(ari, channel, "CALLCTL_SECOND")  # the other socket: one held on each
                await wait_for_async(lambda: [s.unanswered for s in _sockets(ari)] == [1, 1], "second held")
                lost = _sockets(ari)[0]
                proxy.cut_client_port(_port(lost.ws))
                # Its request fails at once (not after its 60 s timeout), the other socket's stays held.
                with pytest.raises(AriUnavailable, match=r"-rest1 closed with the request in flight"):
                    await asyncio.wait_for(first, 10)
                assert not second.done()
                await wait_for_async(lambda: len(_sockets(ari)) == 2 and lost not in _sockets(ari), "rest1 reopened")
                assert ari.reconnects == 0 and len(seen.resyncs) == 1 and ari.connected.is_set()
                await ari.stop_playback(f"long-{channel}")  # on the reopened socket: the held one is avoided
                await asyncio.wait_for(second, 20)
                assert await ari.get_var(channel, "CALLCTL_SECOND") == "1"
            # The events kept flowing on the same connection (the call's StasisEnd came through it).
            assert ari.reconnects == 0 and len(seen.resyncs) == 1

    asyncio.run(main())


def test_losing_the_events_socket_fails_every_request_in_flight_and_reconnects_and_resynchronises(
        asterisk: AsteriskInstance, proxy: OneSocketProxy) -> None:
    seen = Seen()

    async def main() -> None:
        settings = _settings(asterisk, proxy.port, sockets=2)
        async with AriClient(settings, seen.events.append, seen.on_connected, lambda: None) as ari:
            await wait_for_async(ari.connected.is_set, "connected", 20)
            async with _call_playing_a_long_prompt(ari, seen, asterisk) as channel:
                held = _held(ari, channel, "CALLCTL_HELD")
                await wait_for_async(lambda: sum(s.unanswered for s in _sockets(ari)) == 1, "held")
                proxy.cut_client_port(_port(ari._ws))
                with pytest.raises(AriUnavailable, match="the events websocket closed with the request in flight"):
                    await asyncio.wait_for(held, 10)
                await wait_for_async(lambda: ari.reconnects == 1 and ari.connected.is_set() and len(seen.resyncs) == 2,
                                     "reconnected and resynchronised", 20)
                # The call stayed in Stasis meanwhile (Asterisk keeps it): it is still ours to control.
                await ari.stop_playback(f"long-{channel}")
                assert (await ari.get_channel(channel)).get("state") == "Up"

    asyncio.run(main())
