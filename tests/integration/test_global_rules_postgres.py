"""The cross-node rules' SQL on a real PostgreSQL (issue 18): channel slots taken under the user's lock,
freed with their node's lease; parallel wrong conference codes counted together."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from callctl.lines.accounts import AccountOptions
from callctl.store import lines as store

pytestmark = pytest.mark.integration

LEASE_S = 15.0


async def _user(pool: asyncpg.Pool, extra_channels: int) -> uuid.UUID:
    account = await store.create_account(pool, "Acme", AccountOptions("FR", "EUR", "payg", extra_channels, False))
    user, _password = await store.add_user(pool, account.id, "Alice")
    return user.id


async def test_parallel_takes_on_two_nodes_get_exactly_the_users_limit(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=8, max_size=8)
    try:
        user = await _user(pool, extra_channels=1)
        taken = await asyncio.gather(*(store.take_slot(pool, user, f"node{i % 2}", f"ch-{i}", 2, LEASE_S)
                                       for i in range(16)))
        assert sum(taken) == 2
        assert len(await store.user_slots(pool, user)) == 2
    finally:
        await pool.close()


async def test_a_channel_takes_its_slot_once_and_gives_it_back(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        user = await _user(pool, extra_channels=0)
        assert await store.take_slot(pool, user, "node1", "ch-1", 1, LEASE_S)
        assert await store.take_slot(pool, user, "node1", "ch-1", 1, LEASE_S)  # a resumed call: the same slot
        assert not await store.take_slot(pool, user, "node2", "ch-2", 1, LEASE_S)
        await store.release_slots(pool, "node1", ["ch-1"])
        assert await store.take_slot(pool, user, "node2", "ch-2", 1, LEASE_S)
        assert await store.user_slots(pool, user) == [("node2", "ch-2")]
    finally:
        await pool.close()


async def test_slots_of_a_node_whose_lease_ran_out_are_freed(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        user = await _user(pool, extra_channels=1)
        assert await store.take_slot(pool, user, "dead", "ch-1", 2, LEASE_S)
        assert await store.take_slot(pool, user, "alive", "ch-2", 2, LEASE_S)
        await pool.execute("UPDATE engine_node SET heartbeat_at = now() - interval '16 seconds' "
                           "WHERE node_id = 'dead'")
        # The live node's heartbeat frees the dead node's slots of every user...
        assert await store.heartbeat(pool, "alive", LEASE_S) == 1
        assert await store.user_slots(pool, user) == [("alive", "ch-2")]
        # ... and a take frees them too, before counting (no slot stuck between two heartbeats).
        assert await store.take_slot(pool, user, "dead", "ch-3", 2, LEASE_S)  # the node came back
        await pool.execute("UPDATE engine_node SET heartbeat_at = now() - interval '16 seconds' "
                           "WHERE node_id = 'dead'")
        assert await store.take_slot(pool, user, "alive", "ch-4", 2, LEASE_S)
        assert sorted(await store.user_slots(pool, user)) == [("alive", "ch-2"), ("alive", "ch-4")]
    finally:
        await pool.close()
