"""The CDR writer against a real PostgreSQL that goes away and comes back: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callctl.cdr.spool import Spool
from callctl.cdr.writer import CdrWriter
from callctl.store import cdrs
from callctl.store.db import connect
from tests.support.postgres import PostgresCluster
from tests.unit.test_cdr_spool import record

pytestmark = pytest.mark.integration


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def stored(url: str) -> tuple[int, int]:
    """(rows, distinct legs) in cdr."""
    conn = await connect(url)
    try:
        return await cdrs.count(conn), await cdrs.count_legs(conn)
    finally:
        await conn.close()


async def test_postgresql_stopped_mid_run_loses_and_duplicates_nothing(
        postgres: PostgresCluster, database_url: str, tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore, retry_max_s=0.5) as w:
            for i in range(100):
                w.submit(record(i))
            assert await w.wait_for_drained(30)
            assert w.store_up
            await asyncio.to_thread(postgres.stop, "fast")
            try:
                for i in range(100, 150):
                    w.submit(record(i))
                await wait_for(lambda: not w.store_up, "the writer to see PostgreSQL go")
                for i in range(150, 200):
                    w.submit(record(i))
                assert not await w.wait_for_drained(1.0)
                assert w.queue_depth == 100
            finally:
                await asyncio.to_thread(postgres.start)
            assert await w.wait_for_drained(60)
            assert w.store_up
    assert await stored(database_url) == (200, 200)
    events = [e["event"] for e in logs]
    assert events.count("cdr_store_unavailable") == 1 and events.count("cdr_store_recovered") == 1
    assert next(e for e in logs if e["event"] == "cdr_store_recovered")["spooled"] == 100
    assert not list((tmp_path / "spool").glob("cdr-*.copy"))


async def test_crash_after_spooling_is_replayed_by_a_new_writer_without_loss_or_duplicate(
        database_url: str, tmp_path: Path) -> None:
    records = [record(i) for i in range(300)]
    crashed = Spool.open(tmp_path / "spool", segment_max_bytes=20_000, exclusive=False)  # several segments
    positions = crashed.append(records)
    conn = await connect(database_url)
    try:
        await cdrs.insert_cdrs(conn, records[:120])  # written, but the ack was lost in the crash
    finally:
        await conn.close()
    crashed.ack(positions[49])  # the last ack that made it to disk
    async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore) as w:
        w.submit(record(1000))
        assert await w.wait_for_drained(30)
        assert w.written_total == 301 - 120 and w.skipped_total == 120 - 50
    assert await stored(database_url) == (301, 301)


async def test_writer_started_with_postgresql_down_spools_then_delivers(
        postgres: PostgresCluster, database_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(postgres.stop, "fast")
    try:
        async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore, retry_max_s=0.5) as w:
            for i in range(25):
                w.submit(record(i))
            await wait_for(lambda: w.queue_depth == 25 and not w.store_up, "records spooled, store down")
            await asyncio.to_thread(postgres.start)
            assert await w.wait_for_drained(60)
            assert w.store_up
    finally:
        await asyncio.to_thread(postgres.start)
    assert await stored(database_url) == (25, 25)


async def test_shutdown_with_postgresql_down_leaves_records_for_the_next_start(
        postgres: PostgresCluster, database_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(postgres.stop, "fast")
    try:
        async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore, drain_grace_s=0.2) as w:
            for i in range(40):
                w.submit(record(i))
    finally:
        await asyncio.to_thread(postgres.start)
    async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore) as w:
        assert w.queue_depth == 40
        assert await w.wait_for_drained(30)
    assert await stored(database_url) == (40, 40)
