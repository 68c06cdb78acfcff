"""The rooms' command listener on a real PostgreSQL (callctl.store.room_commands.RoomListener, built on the
shared listener of callctl.store.listen): its connection killed, it notices at once and reconnects by
itself; a command sent meanwhile is still delivered (the owner polls while it cannot hear), and one sent
once it is back as well."""

from __future__ import annotations

import asyncpg
import pytest

from callctl.conference.actions import Action
from callctl.store.room_commands import LISTENER_APP_NAME
from tests.integration.test_room_commands import FakeRooms, conference, pool, serving

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
