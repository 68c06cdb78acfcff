"""CPU per ARI frame in callctl.ari, single core (CPU time of this process: a busy shared machine
counts less against it), issue 17. Two measures:

- stages: one frame's decode (orjson), its event (callctl.ari.events.decode) and its routing to a
  call's mailbox (callctl.ari.dispatch), and one request's RESTRequest frame and its answer matched,
  on realistic Asterisk 22 frames (the event mix of a conference caller, after the event filter);
- reader: the events websocket end to end: a local server (another process) sends N event frames,
  the engine's own reader (AriClient._read_events: aiohttp's frame parser, decode, route) reads
  them; CPU of this process per frame.

    .venv/bin/python -m bench.ari_frames [--frames 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import timeit
from typing import Any

import orjson

from callctl.ari.dispatch import Dispatcher
from callctl.ari.events import Event, decode
from callctl.ari.transport import RequestSocket, WsRequests

CHANNEL = {"id": "1796309322.42", "name": "PJSIP/caller-00000029", "state": "Up", "protocol_id": "abc@127.0.0.1",
           "caller": {"name": "", "number": "33612345678"}, "connected": {"name": "", "number": ""},
           "accountcode": "", "dialplan": {"context": "from-callers", "exten": "+33900000002", "priority": 2,
                                           "app_name": "Stasis", "app_data": "callctl"},
           "creationtime": "2026-12-03T14:50:24.610+0000", "language": "en", "tenantid": ""}
BASE = {"asterisk_id": "52:54:00:12:34:56", "application": "callctl"}
PLAYBACK = {"id": "p-1796309322.42-3", "media_uri": "sound:callctl/enter-code", "target_uri":
            "channel:1796309322.42", "language": "en", "state": "done"}
# One conference caller's events after the filter (StasisStart, 5 digits, 2 playbacks, the end).
MIX: list[dict[str, Any]] = (
    [{"type": "StasisStart", "args": [], "channel": CHANNEL, **BASE}]
    + [{"type": "ChannelDtmfReceived", "digit": d, "duration_ms": 100, "channel": CHANNEL, **BASE} for d in "1234#"]
    + [{"type": "PlaybackFinished", "playback": PLAYBACK, **BASE}] * 2
    + [{"type": "ChannelHangupRequest", "cause": 16, "soft": False, "channel": CHANNEL, **BASE},
       {"type": "StasisEnd", "channel": CHANNEL, **BASE},
       {"type": "ChannelDestroyed", "cause": 16, "cause_txt": "Normal Clearing", "channel": CHANNEL, **BASE}])
# Each its own moment, but the hang-up's three share one (as Asterisk sends them).
for _n, _m in enumerate(MIX):
    MIX[_n] = {**_m, "timestamp": f"2026-12-03T14:50:{25 + min(_n, len(MIX) - 3):02d}.125+0000"}
FRAMES = [orjson.dumps(m).decode() for m in MIX]


def _per_frame_us(fn: Any, count: int) -> float:
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(5, count)) / (count * len(FRAMES)) * 1e6


def stages(count: int) -> dict[str, float]:
    mailbox: asyncio.Queue[Event] = asyncio.Queue()
    dispatcher = Dispatcher(lambda _s: None)
    dispatcher.register(CHANNEL["id"], mailbox)
    raws = [orjson.loads(f) for f in FRAMES]
    events = [decode(r) for r in raws]

    def parse() -> None:
        for f in FRAMES:
            orjson.loads(f)

    def to_event() -> None:
        for r in raws:
            decode(r)

    def route() -> None:
        for e in events:
            if e is not None:
                dispatcher.route(e)
        while not mailbox.empty():
            mailbox.get_nowait()

    def whole() -> None:
        for f in FRAMES:
            e = decode(orjson.loads(f))
            if e is not None:
                dispatcher.route(e)
        while not mailbox.empty():
            mailbox.get_nowait()

    return {"json decode": _per_frame_us(parse, count), "event decode": _per_frame_us(to_event, count),
            "route": _per_frame_us(route, count), "frame -> mailbox": _per_frame_us(whole, count)}


class _SinkWs:
    async def send_frame(self, data: bytes, opcode: Any) -> None:
        self.last = data


def request_round_trip(count: int) -> float:
    """One request through WsRequests: its frame built and sent (to a sink), its answer matched."""
    async def main() -> float:
        requests = WsRequests("bench")
        ws = _SinkWs()
        sock = RequestSocket(ws, "bench")  # type: ignore[arg-type]
        requests.attach(sock)
        loop = asyncio.get_running_loop()
        answer = {"type": "RESTResponse", "status_code": 204, "reason_phrase": "No Content", "uri": "x"}

        async def one(n: int) -> None:
            task = asyncio.ensure_future(requests.request("POST", "channels/1796309322.42/play/p-1",
                                                          params={"media": "sound:beep", "lang": "en"},
                                                          json_body=None, timeout_s=10))
            await asyncio.sleep(0)
            sent = orjson.loads(ws.last)
            sock.resolve({**answer, "request_id": sent["request_id"]}, loop.time())
            await task

        start = time.process_time()
        for n in range(count):
            await one(n)
        return (time.process_time() - start) / count * 1e6

    return asyncio.run(main())


def _serve(port_out: Any, frames: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        payload = [f.encode() for f in FRAMES]
        for n in range(frames):
            await ws.send_frame(payload[n % len(payload)], web.WSMsgType.TEXT)
        await ws.close()
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ari/events", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.sleep(3600)

    asyncio.run(main())


def reader(frames: int) -> float:
    """The events websocket read by the engine's reader; CPU of this process per frame (µs)."""
    import aiohttp

    from callctl.ari.client import AriClient
    from callctl.config import Settings

    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue, frames), daemon=True)
    server.start()
    port = queue.get(timeout=30)

    async def main() -> float:
        mailbox: asyncio.Queue[Event] = asyncio.Queue()
        dispatcher = Dispatcher(lambda _s: mailbox.put_nowait(_s))
        dispatcher.register(CHANNEL["id"], mailbox)
        routed = 0

        def on_event(event: Event) -> None:
            nonlocal routed
            routed += 1
            dispatcher.route(event)
            if mailbox.qsize() > 1000:
                while not mailbox.empty():
                    mailbox.get_nowait()

        async def nothing() -> None:
            return None

        client = AriClient(Settings(ari_url=f"http://127.0.0.1:{port}/"), on_event, nothing, lambda: None)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/ari/events", max_msg_size=16 * 1024 * 1024)
            start = time.process_time()
            await client._read_events(ws)
            used = time.process_time() - start
        assert routed == frames, (routed, frames)
        return used / frames * 1e6

    try:
        return asyncio.run(main())
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    args = parser.parse_args()
    for name, us in stages(max(1, args.frames // len(FRAMES) // 5)).items():
        print(f"{name:<24} {us:6.2f} µs/frame")
    print(f"{'request round trip':<24} {request_round_trip(args.frames // 10):6.2f} µs/request")
    print(f"{'events websocket reader':<24} {reader(args.frames):6.2f} µs/frame (aiohttp parse + decode + route)")


if __name__ == "__main__":
    main()
