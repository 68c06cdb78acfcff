"""The CDR writer over a fake store: submit never waits, outages lose nothing, bad rows are set aside."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from callctl.cdr.spool import Spool
from callctl.cdr.writer import CdrWriter
from callctl.errors import SpoolError, StoreError, StoreUnavailable
from tests.support.waiting import wait_for_async
from tests.unit.test_cdr_copyline import hostile, stored_record
from tests.unit.test_cdr_spool import record


class FakeStore:
    """Idempotent like the real table (primary key leg_id, started_at); can be switched down."""

    description = "fake://store"

    def __init__(self) -> None:
        self.rows: dict[tuple[Any, Any], CdrRecord] = {}
        self.up = True
        self.bad_channels: set[str] = set()
        self.inserts = 0

    async def connect(self) -> None:
        if not self.up:
            raise StoreUnavailable("fake store down")

    async def insert(self, records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        assert [copyline.decode(line) for line in lines] == [stored_record(r) for r in records]
        await self.connect()
        self.inserts += 1
        if any(r.channel_id in self.bad_channels for r in records):
            raise StoreError("invalid byte sequence for encoding UTF8: 0x00")
        added = 0
        for r in records:
            if (r.leg_id, r.started_at) not in self.rows:
                self.rows[(r.leg_id, r.started_at)] = r
                added += 1
        return added

    async def close(self) -> None:
        pass


def spooled_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob("cdr-*.copy"))


def writer(tmp_path: Path, store: FakeStore, **kwargs: Any) -> CdrWriter:
    kwargs.setdefault("flush_interval_s", 0.01)
    kwargs.setdefault("retry_max_s", 0.05)
    return CdrWriter("postgresql://unused@127.0.0.1:1/x", tmp_path / "spool", store_factory=lambda _: store,
                     **kwargs)


async def test_submitted_records_reach_the_store_and_the_spool_is_emptied(tmp_path: Path) -> None:
    store = FakeStore()
    async with writer(tmp_path, store) as w:
        for i in range(50):
            w.submit(record(i))
        assert w.queue_depth == 50  # submit returned without any I/O
        assert await w.wait_for_drained(10)
        assert w.store_up and w.queue_depth == 0
    assert len(store.rows) == 50
    assert not list((tmp_path / "spool").glob("cdr-*.copy"))


async def test_batches_are_capped_at_batch_max(tmp_path: Path) -> None:
    store = FakeStore()
    async with writer(tmp_path, store, batch_max=7, flush_interval_s=0.5) as w:
        for i in range(70):
            w.submit(record(i))
        assert await w.wait_for_drained(10)
    assert len(store.rows) == 70 and store.inserts >= 10


async def test_store_outage_spools_then_writes_everything_once_and_logs_once_each_way(tmp_path: Path) -> None:
    store = FakeStore()
    with capture_logs() as logs:
        async with writer(tmp_path, store) as w:
            for i in range(20):
                w.submit(record(i))
            assert await w.wait_for_drained(10)
            store.up = False
            for i in range(20, 60):
                w.submit(record(i))
            await wait_for_async(lambda: not w.store_up, "the writer to notice the outage")
            assert w.queue_depth == 40
            store.up = True
            assert await w.wait_for_drained(10)
            assert w.store_up
    assert len(store.rows) == 60
    events = [e["event"] for e in logs]
    assert events.count("cdr_store_unavailable") == 1 and events.count("cdr_store_recovered") == 1
    recovered = next(e for e in logs if e["event"] == "cdr_store_recovered")
    assert recovered["spooled"] == 40


async def test_writer_starts_with_the_store_down_and_catches_up(tmp_path: Path) -> None:
    store = FakeStore()
    store.up = False
    async with writer(tmp_path, store) as w:
        w.submit(record(1))
        assert not await w.wait_for_drained(0.2)
        assert not w.store_up and w.queue_depth == 1
        store.up = True
        assert await w.wait_for_drained(10)
    assert len(store.rows) == 1


async def test_records_left_at_shutdown_are_replayed_by_the_next_writer(tmp_path: Path) -> None:
    store = FakeStore()
    store.up = False
    with capture_logs() as logs:
        async with writer(tmp_path, store, drain_grace_s=0.1) as w:
            for i in range(30):
                w.submit(record(i))
    assert any(e["event"] == "cdr_left_in_spool" and e["records"] == 30 for e in logs)
    assert not store.rows
    store.up = True
    async with writer(tmp_path, store) as w:
        assert await w.wait_for_drained(10)
    assert len(store.rows) == 30


async def test_replay_after_a_lost_ack_writes_no_duplicate(tmp_path: Path) -> None:
    store = FakeStore()
    records = [record(i) for i in range(10)]
    crashed = Spool.open(tmp_path / "spool", exclusive=False)
    crashed.append(records)  # spooled, never acknowledged (crash)
    for r in records[:6]:  # ... and some were in the store already
        store.rows[(r.leg_id, r.started_at)] = r
    async with writer(tmp_path, store) as w:
        assert await w.wait_for_drained(10)
        assert w.skipped_total == 6 and w.written_total == 4
    assert len(store.rows) == 10


async def test_a_malformed_record_is_set_aside_and_the_others_are_written(tmp_path: Path) -> None:
    store = FakeStore()
    store.bad_channels = {"chan-3"}
    with capture_logs() as logs:
        async with writer(tmp_path, store, flush_interval_s=0.2) as w:
            for i in range(6):
                w.submit(record(i))
            assert await w.wait_for_drained(10)
    assert sorted(r.channel_id for r in store.rows.values()) == ["chan-0", "chan-1", "chan-2", "chan-4", "chan-5"]
    assert "chan-3" in (tmp_path / "spool" / "rejected.jsonl").read_text()
    assert [e["leg_id"] for e in logs if e["event"] == "cdr_rejected"] == [str(record(3).leg_id)]


async def test_unwritable_spool_at_run_time_still_delivers_to_the_store(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = FakeStore()

    def disk_full(self: Spool, lines: Sequence[bytes]) -> list[Any]:
        raise SpoolError(f"CDR spool {self.directory}: cannot write: No space left on device (ENOSPC)")

    with capture_logs() as logs:
        async with writer(tmp_path, store) as w:
            monkeypatch.setattr(Spool, "append_lines", disk_full)
            for i in range(5):
                w.submit(record(i))
            assert await w.wait_for_drained(10)
    assert len(store.rows) == 5
    assert [e["event"] for e in logs].count("cdr_spool_unwritable") == 1


async def test_unusable_spool_dir_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="Not a directory"):
        async with CdrWriter("postgresql://x@127.0.0.1:1/x", tmp_path / "file" / "spool",
                             store_factory=lambda _: FakeStore()):
            pass


async def test_records_are_durable_in_the_spool_while_the_store_is_stuck(tmp_path: Path) -> None:
    store = FakeStore()
    gate = asyncio.Event()
    real_insert = store.insert

    async def stuck(records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        await gate.wait()
        return await real_insert(records, lines)

    store.insert = stuck  # type: ignore[method-assign]
    async with writer(tmp_path, store) as w:
        for i in range(1000):
            w.submit(record(i))
        assert w.queue_depth == 1000
        # Durable while the store is still stuck: a crash now would replay all of them.
        await wait_for_async(lambda: spooled_lines(tmp_path / "spool") == 1000, "1000 records in the spool")
        assert not store.rows
        gate.set()
        assert await w.wait_for_drained(10)
    assert len(store.rows) == 1000


async def test_a_bug_in_the_store_is_logged_and_retried_never_ending_the_writer(tmp_path: Path) -> None:
    store = FakeStore()
    real_insert = store.insert
    failures = [RuntimeError("bug")]

    async def buggy(records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        if failures:
            raise failures.pop()
        return await real_insert(records, lines)

    store.insert = buggy  # type: ignore[method-assign]
    with capture_logs() as logs:
        async with writer(tmp_path, store) as w:
            w.submit(record(1))
            assert await w.wait_for_drained(10)
    assert len(store.rows) == 1
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["cdr_store_failed"]


async def test_a_record_that_cannot_be_encoded_is_set_aside_and_the_others_are_written(tmp_path: Path) -> None:
    store = FakeStore()
    circular: dict[str, Any] = {}
    circular["self"] = circular  # a producer's bug: no JSON for it
    with capture_logs() as logs:
        async with writer(tmp_path, store) as w:
            for i in range(5):
                w.submit(record(i, extra=circular) if i == 2 else record(i))
            assert await w.wait_for_drained(10)
            w.submit(record(5))  # the spool task is still alive
            assert await w.wait_for_drained(10)
    assert sorted(r.channel_id for r in store.rows.values()) == ["chan-0", "chan-1", "chan-3", "chan-4", "chan-5"]
    assert "chan-2" in (tmp_path / "spool" / "rejected.jsonl").read_text()
    [rejected] = [e for e in logs if e["event"] == "cdr_rejected"]
    assert rejected["leg_id"] == str(record(2).leg_id) and "cannot encode" in rejected["error"]


async def test_hostile_text_never_stops_the_spool_task(tmp_path: Path) -> None:
    # The JSON-lines spool died on a lone surrogate (orjson refused it) and spooled nothing after it.
    store = FakeStore()
    async with writer(tmp_path, store) as w:
        w.submit(hostile(1))
        assert await w.wait_for_drained(10)
        w.submit(record(2))
        assert await w.wait_for_drained(10)
    assert sorted(r.channel_id for r in store.rows.values()) == ["chan-1", "chan-2"]
