"""The Online Space's listener: a port already taken leaves the engine running without its space."""

from __future__ import annotations

import socket

from structlog.testing import capture_logs

from callctl.conference.changes import ChangeFeed
from callctl.config import Settings
from callctl.web.server import SpaceServer


class NoRooms:
    changes = ChangeFeed()

    async def view(self, conference_id: object) -> None:
        return None

    async def act(self, conference_id: object, action: object) -> str:
        return "no_live_room"


async def test_a_taken_port_is_logged_and_the_engine_goes_on() -> None:
    # capture_logs: what the space logs, whatever another test configured structlog to print to
    with socket.socket() as holder, capture_logs() as logs:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = SpaceServer(Settings(space_listen=f"127.0.0.1:{port}"), None, NoRooms())
        async with server:
            assert server.port == 0  # not serving
    assert [e["event"] for e in logs].count("space_listen_failed") == 1


async def test_the_space_listens_and_closes() -> None:
    server = SpaceServer(Settings(space_listen="127.0.0.1:0"), None, NoRooms())
    async with server:
        assert server.port > 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass


async def test_change_notices_wake_waiters_and_time_out_quietly() -> None:
    import asyncio

    feed = ChangeFeed()
    asyncio.get_running_loop().call_soon(feed.notify, "c1")  # runs once the wait below has begun
    assert await feed.wait_for_change("c1", 5) is True
    assert await feed.wait_for_change("c1", 0.01) is False
    feed.notify("other")  # nobody waiting: nothing kept


async def test_a_database_outage_gets_a_clear_503_page_not_a_crash() -> None:
    import uuid

    import aiohttp
    from aiohttp.test_utils import TestServer

    from callctl.errors import StoreUnavailable

    class DownPool:
        async def fetchrow(self, *args: object) -> None:
            raise StoreUnavailable("PostgreSQL at 127.0.0.1:5432: connection refused")

    server = SpaceServer(Settings(space_listen="127.0.0.1:0"), DownPool(), NoRooms())
    http = TestServer(server.app())
    await http.start_server()
    try:
        with capture_logs() as logs:
            async with aiohttp.ClientSession(cookies={"callctl_space": "x" * 43}) as client:
                res = await client.get(http.make_url(f"/c/{uuid.uuid4()}/"))
                assert res.status == 503 and "try again in a minute" in await res.text()
                assert res.headers["Content-Security-Policy"].startswith("default-src 'none'")
                res = await client.get(http.make_url("/s/" + "A" * 32), allow_redirects=False)
                assert res.status == 503
    finally:
        await http.close()
    # once when it goes, not per request
    assert [e["event"] for e in logs].count("space_store_unavailable") == 1
