"""The CDR writer against a real PostgreSQL that goes away and comes back: nothing lost, nothing twice; hostile
text stored in its column; a spool of the previous (JSON-lines) format drained after an upgrade."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callctl.cdr.record import CdrRecord
from callctl.cdr.spool import Spool
from callctl.cdr.writer import CdrWriter
from callctl.store import cdrs
from callctl.store.db import connect
from tests.support.postgres import PostgresCluster
from tests.support.waiting import wait_for_async
from tests.unit.test_cdr_copyline import hostile, stored_record
from tests.unit.test_cdr_spool import OLD_FORMAT_LINE, old_format, record

pytestmark = pytest.mark.integration


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
                await wait_for_async(lambda: not w.store_up, "the writer to see PostgreSQL go", 30.0)
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
            await wait_for_async(lambda: w.queue_depth == 25 and not w.store_up, "records spooled, store down", 30.0)
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


async def stored_rows(url: str, records: list[CdrRecord]) -> list[tuple[CdrRecord, int]]:
    """Each record as PostgreSQL holds it, with its billed_s column."""
    conn = await connect(url)
    try:
        out = []
        for r in records:
            [back] = await cdrs.fetch_by_call_id(conn, r.call_id)
            billed = await conn.fetchval("SELECT billed_s FROM cdr WHERE leg_id = $1", r.leg_id)
            out.append((back, billed))
        return out
    finally:
        await conn.close()


async def test_hostile_values_reach_postgresql_in_their_columns_by_copy_and_by_the_replay_path(
        database_url: str, tmp_path: Path) -> None:
    direct = [hostile(i) for i in range(5)] + [record(i, answered_at=None) for i in range(5, 8)]
    async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore) as w:
        for r in direct:
            w.submit(r)
        assert await w.wait_for_drained(30)
        assert w.written_total == 8
    # A crash after spooling, with some legs already stored: the COPY of the replayed lines fails on the
    # primary key and the same bytes go through the temporary table and ON CONFLICT DO NOTHING.
    replayed = [hostile(i) for i in range(10, 16)]
    crashed = Spool.open(tmp_path / "spool", exclusive=False)
    crashed.append([direct[0], *replayed])
    async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore) as w:
        assert await w.wait_for_drained(30)
        assert w.written_total == 6 and w.skipped_total == 1
    assert await stored(database_url) == (14, 14)
    everything = direct + replayed
    for (back, billed), sent in zip(await stored_rows(database_url, everything), everything, strict=True):
        assert back == stored_record(sent)
        assert billed == sent.billed_s
    [(back, _)] = await stored_rows(database_url, [direct[0]])
    assert (back.hangup_reason, back.account_id, back.role, back.user_id) == ("\\N", "", "\t", "?")


async def test_a_json_lines_spool_of_the_previous_version_drains_after_an_upgrade(
        database_url: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    # The old format held no lone surrogate (orjson refused it); the rest of the hostile text it did.
    records = [record(i) for i in range(6)] + [record(6, person="a\tb\nc\\N\x00 😀", extra={"k\t": ["\r\x00"]})]
    (spool_dir / "cdr-000000000004.jsonl").write_bytes(old_format(records[:4]))
    (spool_dir / "cdr-000000000005.jsonl").write_bytes(OLD_FORMAT_LINE + old_format(records[4:]))
    (spool_dir / "ack.json").write_text('{"segment": 4, "lines": 1}')  # records[0] was stored
    conn = await connect(database_url)
    try:
        await cdrs.ensure_partitions(conn, [records[0].started_at])
        await cdrs.insert_cdrs(conn, records[:2])  # records[1] too, but its ack was lost
    finally:
        await conn.close()
    async with CdrWriter(database_url, spool_dir, store_factory=cdrs.PgCdrStore) as w:
        assert w.queue_depth == 7
        w.submit(record(100))
        assert await w.wait_for_drained(30)
        assert w.written_total == 7 and w.skipped_total == 1
    assert await stored(database_url) == (9, 9)
    for (back, _), sent in zip(await stored_rows(database_url, records), records, strict=True):
        assert back == stored_record(sent)
    assert not list(spool_dir.glob("cdr-*"))
