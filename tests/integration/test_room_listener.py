"""The rooms' command listener on a real PostgreSQL (callctl.store.room_commands.RoomListener, built on the
shared listener of callctl.store.listen): its connection killed, it notices at once and reconnects by
itself; a command sent meanwhile is still delivered (the owner polls while it cannot hear), and one sent
once it is back as well. A connection that goes silent without a FIN (a network gone) is noticed by the
listener's ping, and the listener hears the commands again once the network is back."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator

import asyncpg
import pytest

from callctl.conference.actions import Action
from callctl.store.room_commands import COMMAND_CHANNEL, LISTENER_APP_NAME, RoomListener
from tests.integration.test_room_commands import FakeRooms, conference, pool, serving
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration
__all__ = ["pool"]  # the fixture, imported for this module

_LISTENERS = ("FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()")


async def listener_pids(db: asyncpg.Pool) -> set[int]:
    return {r["pid"] for r in await db.fetch(f"SELECT pid {_LISTENERS}", LISTENER_APP_NAME)}


async def test_the_room_listener_notices_its_connection_killed_and_commands_still_arrive(
        pool: asyncpg.Pool, database_url: str) -> None:
    cid = await conference(pool, "b")
    owner = FakeRooms(cid)
    async with serving(pool, database_url, owner, "b") as b, serving(pool, database_url, FakeRooms(), "a") as a:
        for node in (a, b):
            assert await node.listener.wait_for_listening(10)
        before = await listener_pids(pool)
        assert len(before) == 2
        assert await pool.fetchval(f"SELECT count(pg_terminate_backend(pid)) {_LISTENERS}", LISTENER_APP_NAME) == 2
        for node in (a, b):
            assert await node.listener.wait_for_not_listening(5)
        # Sent while the listeners are down or reconnecting: the owner's polls find it.
        assert await a.act(cid, Action("lock", "org@example.com", "organizer")) == "done"
        for node in (a, b):
            assert await node.listener.wait_for_listening(10)  # back by itself, on a new connection
        after = await listener_pids(pool)
        assert len(after) == 2 and not after & before
        assert await a.act(cid, Action("unlock", "org@example.com", "organizer")) == "done"
    assert owner.applied == ["lock", "unlock"]


class SilentProxy(CuttableProxy):
    """While ``silent``, what either side sends is dropped and nothing is closed: a network gone, no FIN."""

    silent = False

    def _pipe(self, src: socket.socket, dst: socket.socket, one_exchange: bool) -> None:
        try:
            while data := src.recv(65536):
                if not self.silent:
                    dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)


@pytest.fixture
def silent_proxy(database_url: str) -> Iterator[tuple[SilentProxy, str]]:
    parts = urllib.parse.urlsplit(database_url)
    proxy = SilentProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    yield proxy, urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    proxy.close()


async def test_a_listener_connection_gone_silent_is_noticed_by_its_ping_and_heard_again_once_back(
        pool: asyncpg.Pool, silent_proxy: tuple[SilentProxy, str]) -> None:
    proxy, url = silent_proxy
    heard: list[tuple[str, str]] = []
    listener = RoomListener(url, lambda channel, payload: heard.append((channel, payload)), ping_interval_s=0.2,
                            ping_timeout_s=0.5, retry_max_s=0.2)
    async with listener:
        assert await listener.wait_for_listening(10)
        await pool.execute(f"SELECT pg_notify('{COMMAND_CHANNEL}', 'b')")
        await wait_for_async(lambda: (COMMAND_CHANNEL, "b") in heard, "the command's NOTIFY heard")
        proxy.silent = True  # no FIN, no RST: only the ping can tell
        assert await listener.wait_for_not_listening(5)
        proxy.silent = False
        assert await listener.wait_for_listening(15)
        assert proxy.accepted >= 2  # on a new connection: the silent one was given up
        assert heard[-1] == (COMMAND_CHANNEL, "")  # back: the command server is told to look at once
        await pool.execute(f"SELECT pg_notify('{COMMAND_CHANNEL}', 'c')")
        await wait_for_async(lambda: (COMMAND_CHANNEL, "c") in heard, "a NOTIFY heard after the network is back")
