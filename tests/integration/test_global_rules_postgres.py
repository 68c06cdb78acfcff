"""The cross-node rules' SQL on a real PostgreSQL (issue 18): channel slots taken under the user's lock,
freed with their node's lease; parallel wrong conference codes counted together."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest

from callctl.lines.accounts import AccountOptions
from callctl.store import conferences, journal
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


async def wait_for_a_lock_wait_or(done: asyncio.Task[object], watcher: asyncpg.Connection) -> bool:
    """True once a session waits for a lock; False if ``done`` finished first (it never waited)."""
    deadline = asyncio.get_running_loop().time() + 10
    while not done.done():
        if await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
            return True
        assert asyncio.get_running_loop().time() < deadline, "neither a lock wait nor an answer"
        await asyncio.sleep(0.02)
    return False


async def test_two_wrong_codes_at_the_same_instant_see_each_other(database_url: str) -> None:
    access, caller = "+33170009999", "+33611000555"
    first, second, watcher = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        async with first.transaction():  # the first attempt is recorded, its transaction not yet committed
            _match, by_caller, by_number = await conferences.find_code(first, "00000000", access, caller, 60)
            assert (by_caller, by_number) == (1, 1)
            parallel = asyncio.create_task(conferences.find_code(second, "11111111", access, caller, 60))
            # The second attempt waits for the first (the same caller's lock) instead of counting without it.
            assert await wait_for_a_lock_wait_or(parallel, watcher)
        _match, by_caller, by_number = await parallel
        assert (by_caller, by_number) == (2, 2)
    finally:
        for conn in (first, second, watcher):
            await conn.close()


async def test_open_calls_of_a_dead_node_are_taken_over_once_and_dropped_when_their_cdr_is_in(
        database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        legs = [str(uuid.uuid4()) for _ in range(2)]
        started = "2026-12-03T10:00:00+00:00"
        await journal.apply(pool, "dead", [
            {"op": "open", "leg": legs[0], "call": legs[0], "channel": "c1", "started_at": started},
            {"op": "answer", "leg": legs[0], "at": "2026-12-03T10:00:02+00:00"},
            {"op": "dial", "leg": legs[0], "channel": "c1-leg"},
            {"op": "open", "leg": legs[1], "call": legs[1], "channel": "c2", "started_at": started},
            {"op": "close", "leg": legs[1], "at": "2026-12-03T10:00:09+00:00"}])
        await store.heartbeat(pool, "alive", LEASE_S)
        await pool.execute("INSERT INTO engine_node (node_id, heartbeat_at) VALUES "
                           "('dead', now() - interval '1 minute')")
        assert await journal.claim_dead_nodes(pool, "alive", 3600) == []  # not dead for that long
        taken = await asyncio.gather(*(journal.claim_dead_nodes(pool, f"alive{i}", 30) for i in range(3)))
        rows = sorted((row for batch in taken for row in batch), key=lambda r: r.leg)
        assert sorted(r.leg for r in rows) == sorted(legs)  # each row taken by one engine only
        by_leg = {r.leg: r for r in rows}
        assert by_leg[legs[0]].entry["answered_at"] == "2026-12-03T10:00:02+00:00"
        assert by_leg[legs[0]].entry["dialled"] == ["c1-leg"] and by_leg[legs[0]].closed_at is None
        assert by_leg[legs[1]].closed_at is not None and {r.node for r in rows} == {"dead"}
        assert all(r.last_seen is not None for r in rows)
        assert await journal.drop_recorded(pool) == 0  # no CDR yet
        await pool.execute("INSERT INTO cdr (leg_id, call_id, direction, from_number, to_number, started_at, "
                           "ended_at, billed_s, disposition, hangup_reason, channel_id) VALUES ($1::uuid, $1::uuid, "
                           "'inbound', '', '', $2::timestamptz, $2::timestamptz, 0, 'ANSWERED', '', 'c1')",
                           legs[0], dt.datetime.fromisoformat(started))
        assert await journal.drop_recorded(pool) == 1
    finally:
        await pool.close()
