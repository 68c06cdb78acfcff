"""The spool's acks (issue 17): rewritten at most once per ``ack_interval_s`` while records keep coming one
batch at a time (not once per batch), written once the writer is idle past that interval, and at close."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callctl.cdr.spool import Position, Spool
from tests.support.waiting import wait_for_async
from tests.unit.test_cdr_spool import record
from tests.unit.test_cdr_writer import FakeStore, writer


def acked_lines(spool_dir: Path) -> int:
    path = spool_dir / "ack.json"
    return int(json.loads(path.read_text())["lines"]) if path.exists() else 0


@pytest.fixture
def ack_writes(monkeypatch: pytest.MonkeyPatch) -> list[Position]:
    writes: list[Position] = []
    real_ack = Spool.ack

    def counting_ack(spool: Spool, upto: Position) -> None:
        writes.append(upto)
        real_ack(spool, upto)

    monkeypatch.setattr(Spool, "ack", counting_ack)
    return writes


async def test_batches_one_after_another_write_one_ack_per_interval_and_the_last_at_close(
        tmp_path: Path, ack_writes: list[Position]) -> None:
    store = FakeStore()
    async with writer(tmp_path, store, ack_interval_s=60.0) as w:
        for i in range(40):  # one call ending at a time: one batch each
            w.submit(record(i))
            assert await w.wait_for_drained(10)
        assert store.inserts == 40
        assert len(ack_writes) == 1  # the first batch's; the other 39 wait for the interval
    assert len(ack_writes) == 2 and acked_lines(tmp_path / "spool") in (0, 40)  # at close: all acknowledged
    assert not list((tmp_path / "spool").glob("cdr-*.copy"))


async def test_an_idle_writer_writes_its_pending_ack_once_the_interval_is_over(
        tmp_path: Path, ack_writes: list[Position]) -> None:
    async with writer(tmp_path, FakeStore(), ack_interval_s=0.2) as w:
        for i in range(3):
            w.submit(record(i))
            assert await w.wait_for_drained(10)
        # No record comes any more: the last batch's ack is written anyway, without a close.
        await wait_for_async(lambda: acked_lines(tmp_path / "spool") == 3, "the idle writer's ack")
