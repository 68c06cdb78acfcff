"""The CDR writer's own spool thread (branch wt-writer): exact queue depth while it takes records, a bug in
an append never ends it, an outage in the middle of a burst loses and duplicates nothing, and a burst
after an idle time reaches the store in a small first batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from callctl.cdr.record import CdrRecord
from callctl.cdr.spool import Position, Spool
from callctl.cdr.writer import BATCH_START
from callctl.errors import StoreUnavailable
from tests.support.waiting import wait_for_async
from tests.unit.test_cdr_spool import record
from tests.unit.test_cdr_writer import FakeStore, spooled_lines, writer


async def test_a_bug_in_an_append_is_logged_and_the_records_still_reach_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = Spool.append_lines
    failures = [RuntimeError("bug in the spool")]

    def buggy(spool: Spool, lines: Sequence[bytes]) -> list[Position]:
        if failures:
            raise failures.pop()
        return real_append(spool, lines)

    monkeypatch.setattr(Spool, "append_lines", buggy)
    store = FakeStore()
    with capture_logs() as logs:
        async with writer(tmp_path, store) as w:
            w.submit(record(1))
            assert await w.wait_for_drained(10)
            w.submit(record(2))  # the thread is still there, and the spool takes records again
            await wait_for_async(lambda: spooled_lines(tmp_path / "spool") == 1, "record 2 in the spool")
            assert await w.wait_for_drained(10)
    assert sorted(r.channel_id for r in store.rows.values()) == ["chan-1", "chan-2"]
    events = [e["event"] for e in logs]
    assert events.count("cdr_spool_failed") == 1 and "cdr_spool_recovered" in events


async def test_store_down_in_the_middle_of_a_burst_writes_every_record_once(tmp_path: Path) -> None:
    store = FakeStore()
    real_insert = store.insert
    batches: list[int] = []

    async def down_after_first(records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        batches.append(len(records))
        if len(batches) == 2:
            store.up = False  # PostgreSQL goes away with this batch on the wire
            raise StoreUnavailable("connection lost mid-batch")
        return await real_insert(records, lines)

    store.insert = down_after_first  # type: ignore[method-assign]
    async with writer(tmp_path, store, batch_max=400) as w:
        for i in range(3000):
            w.submit(record(i))
        await wait_for_async(lambda: len(batches) == 2 and not w.store_up, "the writer to notice the outage")
        # Durable while PostgreSQL is away: everything is spooled by the thread meanwhile.
        await wait_for_async(lambda: spooled_lines(tmp_path / "spool") == 3000, "the burst in the spool")
        assert w.queue_depth == 3000 - batches[0]
        store.up = True
        assert await w.wait_for_drained(10)
        assert w.written_total == 3000 and w.skipped_total == 0
    assert len(store.rows) == 3000


async def test_queue_depth_stays_exact_while_the_thread_spools_slowly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = Spool.append_lines
    in_append = threading.Event()

    def slow_disk(spool: Spool, lines: Sequence[bytes]) -> list[Position]:
        in_append.set()
        time.sleep(0.05)  # a slow fsync, in the spool thread (not a synchronisation of the test)
        return real_append(spool, lines)

    monkeypatch.setattr(Spool, "append_lines", slow_disk)
    store = FakeStore()
    async with writer(tmp_path, store) as w:
        depths = []
        for i in range(2000):
            w.submit(record(i))
            depths.append(w.queue_depth)
        assert depths == list(range(1, 2001))  # whatever the thread took meanwhile is still counted
        assert await w.wait_for_drained(10)
        assert w.queue_depth == 0
    assert len(store.rows) == 2000


async def test_a_burst_after_an_idle_time_reaches_the_store_in_a_small_first_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = Spool.append_lines
    appends: list[int] = []
    first_insert = threading.Event()
    store_went_first: list[bool] = []

    def gated(spool: Spool, lines: Sequence[bytes]) -> list[Position]:
        appends.append(len(lines))
        if len(appends) == 2:  # the store gets the first batch while the spool still writes the rest
            store_went_first.append(first_insert.wait(10))
        return real_append(spool, lines)

    monkeypatch.setattr(Spool, "append_lines", gated)
    store = FakeStore()
    sizes: list[int] = []
    real_insert = store.insert

    async def noting(records: Sequence[CdrRecord], lines: Sequence[bytes]) -> Any:
        sizes.append(len(records))
        first_insert.set()
        return await real_insert(records, lines)

    store.insert = noting  # type: ignore[method-assign]
    records = [record(i) for i in range(5000)]
    async with writer(tmp_path, store, flush_interval_s=5.0) as w:
        for r in records:
            w.submit(r)
        assert await w.wait_for_drained(30)
    assert appends[0] <= BATCH_START and sizes[0] <= BATCH_START, (appends, sizes)
    assert store_went_first == [True] and sum(sizes) == 5000
