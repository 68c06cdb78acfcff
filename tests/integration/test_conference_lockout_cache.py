"""The conference lockout's failures kept in memory, on a real PostgreSQL (issue 17): wrong codes recorded
by another engine (another pool, as another node would) are counted from PostgreSQL's notifications with no
query per check, expire when PostgreSQL's own window says so, an erasure makes the cache read the window
again, and a cache that cannot hear notifications reads PostgreSQL instead of serving what it had."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.store import conferences as store
from callctl.store.lockout import LISTENER_APP_NAME, LockoutCache
from scripts.devstack import AsteriskInstance
from tests.integration.test_conference import book, caller
from tests.support import sipp
from tests.support.asterisk import wait_for as wait_until

pytestmark = pytest.mark.integration

CALLER = "+33611000041"
OTHER = "+33611000042"
ACCESS = "+33900000100"


@contextlib.asynccontextmanager
async def _cache(database_url: str, window_s: float) -> AsyncIterator[tuple[LockoutCache, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(database_url, min_size=3, max_size=3)  # opened before a test bars connections
    try:
        async with LockoutCache(database_url, window_s, retry_max_s=0.2) as cache:
            assert await cache.wait_for_listening(10)
            yield cache, pool
    finally:
        await pool.close()


async def _wrong_code(pool: asyncpg.Pool, caller: str, window_s: float) -> tuple[int, int]:
    """A wrong code as any engine records it (the code lookup's statement); PostgreSQL's own counts."""
    match, by_caller, by_number = await store.find_code(pool, "00000000", ACCESS, caller, window_s)
    assert match is None
    return by_caller, by_number


async def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_wrong_codes_of_another_engine_are_counted_without_a_query_and_expire_with_postgresqls_window(
        database_url: str) -> None:
    window_s = 3.0
    async with _cache(database_url, window_s) as (cache, pool):
        assert await cache.recent_failures(pool, CALLER, ACCESS) == (0, 0)
        expected = [await _wrong_code(pool, CALLER, window_s), await _wrong_code(pool, OTHER, window_s)][-1]
        assert expected == (1, 2)

        async def counted() -> bool:
            return await cache.recent_failures(pool, CALLER, ACCESS) == (1, 2)

        await wait_for(counted, 5, "the notifications")
        misses = cache.misses
        assert await cache.recent_failures(pool, OTHER, ACCESS) == (1, 2)
        assert await cache.recent_failures(pool, "+33611000043", "+33900000101") == (0, 0)
        assert cache.misses == misses  # answered from memory

        async def expired_in_postgresql() -> bool:
            return await store.recent_failures(pool, CALLER, ACCESS, window_s) == (0, 0)

        await wait_for(expired_in_postgresql, window_s + 5, "the window to pass in PostgreSQL")

        async def expired_here() -> bool:
            return await cache.recent_failures(pool, CALLER, ACCESS) == (0, 0)

        # Within the reading of PostgreSQL's clock (half a round trip), not a window later.
        await wait_for(expired_here, 0.5, "the window to pass in the cache")
        assert cache.misses == misses


async def test_the_window_is_read_at_start_and_again_after_an_erasure(database_url: str) -> None:
    window_s = 600.0
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        await _wrong_code(pool, CALLER, window_s)
        await _wrong_code(pool, CALLER, window_s)
    async with _cache(database_url, window_s) as (cache, pool):
        misses = cache.misses
        assert await cache.recent_failures(pool, CALLER, ACCESS) == (2, 2)  # read when it started
        assert cache.misses == misses
        # An erasure (callctl privacy erase deletes a number's attempts): the cache forgets and reads again.
        await pool.execute("DELETE FROM conference_attempt WHERE caller = $1", CALLER)

        async def forgotten() -> bool:
            return await cache.recent_failures(pool, CALLER, ACCESS) == (0, 0)

        await wait_for(forgotten, 5, "the erasure to be heard")
        assert await cache.wait_for_listening(10)
        misses = cache.misses
        assert await cache.recent_failures(pool, CALLER, ACCESS) == (0, 0)


async def test_when_the_listener_connection_drops_the_check_reads_postgresql(database_url: str) -> None:
    window_s = 600.0
    async with _cache(database_url, window_s) as (cache, pool):
        # The listener cannot come back until the test allows it (the pool's connections stay open).
        database = await pool.fetchval("SELECT current_database()")
        admin = await asyncpg.connect(database_url, database="postgres")  # a database cannot bar itself
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        killed = await pool.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE application_name = $1", LISTENER_APP_NAME)
        assert killed == 1
        assert await cache.wait_for_not_listening(5)
        # A wrong code recorded while the cache cannot hear: the check still sees it (from PostgreSQL) ...
        await _wrong_code(pool, CALLER, window_s)
        misses = cache.misses
        assert await cache.recent_failures(pool, CALLER, ACCESS) == (1, 1)
        assert cache.misses == misses + 1
        # ... and once the listener is back, from the window it read again.
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
        assert await cache.wait_for_listening(10)
        misses = cache.misses
        assert await cache.recent_failures(pool, CALLER, ACCESS) == (1, 1)
        assert cache.misses == misses


def test_wrong_codes_recorded_by_another_node_lock_the_caller_out_of_a_real_call(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    """The daemon's check before the prompt comes from its cache: wrong codes another node recorded (its
    statement, run here on the shared database) lock the caller out; another number is not affected."""
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory(conference_lockout_failures="2")
    d.wait_until_ready()
    d.wait_for_log("conference_lockout_cache_on")

    async def another_node_records_two_wrong_codes() -> None:
        async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
            for _ in range(2):
                await _wrong_code(pool, "+33611000051", 600.0)

    asyncio.run(another_node_records_two_wrong_codes())
    locked = caller(asterisk, conf["organizer"]["code"], [("wait_bye", None)], "33611000051")
    assert sipp.finish(*locked).ok
    d.wait_for_log("conference_caller_locked_out")
    assert not d.events("conference_member_join")
    other = caller(asterisk, conf["participants"][0]["code"], [("pause", 1500), ("bye", None)], "33611000052")
    assert sipp.finish(*other).ok
    wait_until(lambda: len(d.events("conference_member_join")) == 1, 10, "the other caller to join")
