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

import pytest

from callctl.ari.client import AriClient
from callctl.ari.events import Event, StasisEnd, StasisStart
from callctl.config import Settings
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


def _held(ari: AriClient, channel: ChannelId, value: str) -> asyncio.Task[None]:
    """A channel command Asterisk carries out only when the playback ends (or stops)."""
    return asyncio.create_task(ari.set_var(channel, "CALLCTL_TEST", value))


def test_a_command_held_by_a_long_prompt_keeps_every_socket_up_and_others_are_answered_meanwhile(
        asterisk: AsteriskInstance) -> None:
    seen = Seen()

    async def main() -> None:
        settings = _settings(asterisk, asterisk.http_port, sockets=2)
        async with AriClient(settings, seen.events.append, seen.on_connected, lambda: None) as ari:
            await wait_for_async(ari.connected.is_set, "connected", 20)
            async with _call_playing_a_long_prompt(ari, seen, asterisk) as channel:
                held = _held(ari, channel, "1")
                # Silent for eight heartbeats: a pinged socket would have been closed by now.
                await asyncio.wait({held}, timeout=8 * HEARTBEAT_S)
                assert not held.done(), "the command was not held by the playback: the test proves nothing"
                # Requests keep being answered, none queued behind the held one (its socket is avoided).
                infos = await asyncio.gather(*(ari.asterisk_info() for _ in range(10)))
                assert all(i.get("system") for i in infos) and not held.done()
                assert ari.reconnects == 0 and len(seen.resyncs) == 1
                await ari.stop_playback(f"long-{channel}")
                await asyncio.wait_for(held, 20)  # carried out once the prompt stopped
                assert await ari.get_var(channel, "CALLCTL_TEST") == "1"
            assert ari.reconnects == 0 and len(seen.resyncs) == 1

    asyncio.run(main())
