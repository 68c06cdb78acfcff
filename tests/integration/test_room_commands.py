"""Commands to a room held by another node, on a real PostgreSQL (issue 18, callctl/conference/remote.py):
claimed once and applied once whoever serves; withdrawn when nobody claims them (and never applied late);
'owner_lost' when the owner dies holding one; a room's published state shown only while its owner's lease
runs. Fake rooms stand for the engines' (the two-node test with real calls is test_space_cluster.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from callctl.conference import remote
from callctl.conference.actions import Action, MemberView, RoomView
from callctl.conference.changes import ChangeFeed
from callctl.store import conferences as conf_store
from callctl.store import room_commands as store

pytestmark = pytest.mark.integration

VIEW = RoomView((MemberView("org@example.com", "organizer", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), False, False),),
                locked=True, participants_muted=False, recording=False)


class FakeRooms:
    def __init__(self, held: uuid.UUID | None = None) -> None:
        self.held = held
        self.applied: list[str] = []

    def view(self, conference_id: uuid.UUID) -> RoomView | None:
        return VIEW if conference_id == self.held else None

    async def act(self, conference_id: uuid.UUID, action: Action) -> str:
        self.applied.append(action.kind)
        return "done" if conference_id == self.held else "no_live_room"

    async def set_recording(self, conference_id: uuid.UUID, on: bool) -> str:
        self.applied.append("record" if on else "stop_recording")
        return "started" if on else "stopped"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    try:
        yield p
    finally:
        await p.close()


async def conference(pool: asyncpg.Pool, owner: str | None, lease_s: float = 60) -> uuid.UUID:
    now = dt.datetime.now(dt.UTC)
    conf, _codes, _ = await conf_store.save_booking(
        pool, subject="Commands", starts_at=now, ends_at=now + dt.timedelta(hours=1), organizer="org@example.com",
        participants=["p0@example.com"], access_numbers=["+33187654321"])
    if owner is not None:
        assert (await conf_store.claim_room(pool, conf.id, owner, lease_s)).node == owner
    return conf.id


@contextlib.asynccontextmanager
async def serving(pool: asyncpg.Pool, database_url: str, rooms: FakeRooms, node: str) -> AsyncIterator[
        remote.ClusterRooms]:
    cluster = remote.ClusterRooms(pool, database_url, rooms, ChangeFeed(), node)
    task = asyncio.create_task(cluster.serve())
    try:
        yield cluster
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_command_to_the_owner_is_applied_once_even_with_two_engines_serving_its_node(
        pool: asyncpg.Pool, database_url: str) -> None:
    cid = await conference(pool, "b")
    owner_rooms, twin_rooms = FakeRooms(cid), FakeRooms(cid)  # two engines claiming one node's commands
    async with serving(pool, database_url, owner_rooms, "b"), serving(pool, database_url, twin_rooms, "b"), \
            serving(pool, database_url, FakeRooms(), "a") as sender:
        results = await asyncio.gather(*(sender.act(cid, Action("lock", "org@example.com", "organizer"))
                                         for _ in range(5)))
        assert results == ["done"] * 5
        assert len(owner_rooms.applied) + len(twin_rooms.applied) == 5  # each command once
        assert await sender.view(cid) is None  # nothing published by the fakes' owners yet
        assert await sender.command(cid, "cli", "record") == "started"


async def test_nobody_claims_the_command_it_is_withdrawn_and_never_applied_later(
        pool: asyncpg.Pool, database_url: str) -> None:
    cid = await conference(pool, "b")
    result = await remote.send_and_wait(pool, cid, "b", "space", "lock", by="org@example.com", role="organizer",
                                        claim_within_s=0.5)
    assert result == "owner_unreachable"
    late = FakeRooms(cid)
    async with serving(pool, database_url, late, "b"), serving(pool, database_url, FakeRooms(), "a") as sender:
        assert await sender.act(cid, Action("unlock", "org@example.com", "organizer")) == "done"
    assert late.applied == ["unlock"]  # the withdrawn 'lock' never reached the room


async def test_the_owner_dies_holding_the_command_the_sender_says_owner_lost(
        pool: asyncpg.Pool, database_url: str) -> None:
    cid = await conference(pool, "b", lease_s=60)

    async def owner_claims_then_dies() -> None:
        for _ in range(100):  # the sender's row, within 5 s
            if await store.claim(pool, "b"):
                break
            await asyncio.sleep(0.05)
        await pool.execute("UPDATE conference_owner SET expires_at = now() - interval '1 s'")  # its lease runs out

    dying = asyncio.create_task(owner_claims_then_dies())
    result = await remote.send_and_wait(pool, cid, "b", "space", "lock", by="org@example.com", role="organizer",
                                        claim_within_s=5)
    await dying
    assert result == "owner_lost"
    command_id = await pool.fetchval("SELECT id FROM conference_command")
    await store.answer(pool, command_id, "done")  # an answer after the sender gave up does not change its answer
    assert (await store.state(pool, command_id)).result == "owner_lost"


async def test_a_rooms_published_state_is_shown_only_while_its_owner_holds_the_lease(
        pool: asyncpg.Pool, database_url: str) -> None:
    cid = await conference(pool, "b")
    await store.publish(pool, cid, "b", 2, remote.view_to_json(VIEW))
    await store.publish(pool, cid, "b", 1, {"members": [], "locked": False})  # an older write: ignored
    sender = remote.ClusterRooms(pool, database_url, FakeRooms(), ChangeFeed(), "a")
    assert await sender.view(cid) == VIEW
    await pool.execute("UPDATE conference_owner SET expires_at = now() - interval '1 s'")
    assert await sender.view(cid) is None  # the owner died: its last state is not shown as live
    await store.publish(pool, cid, "b", 3, None)
    assert await pool.fetchval("SELECT count(*) FROM conference_live") == 0
