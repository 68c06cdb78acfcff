"""The open-calls journal across restarts when a call's ``close`` is in the file but not yet in PostgreSQL
(the mirror sends it up to 0.2 s later): the row PostgreSQL still has open must not be taken back as a
call that ended with no engine (its real CDR is in the local spool)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from callctl.cdr.journal import CallJournal, JournalMirror, JournalStore, OpenCall
from callctl.cdr.spool import Spool
from callctl.errors import SpoolError, StoreError
from tests.unit.test_cdr_spool import record
from tests.unit.test_cdr_writer import FakeStore, writer

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
ENTRY = {"call": "a", "channel": "c1", "started_at": T0.isoformat(),
         "answered_at": (T0 + dt.timedelta(seconds=1)).isoformat()}
STILL_OPEN_ROW = OpenCall("a", "n1", ENTRY, None, T0 + dt.timedelta(seconds=30))


class Rows:
    """PostgreSQL's side of the mirror: the batches it took."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []

    async def apply(self, node: str, ops: Sequence[dict[str, Any]]) -> None:
        self.batches.append(list(ops))

    async def node_calls(self, node: str) -> list[OpenCall]:
        return [STILL_OPEN_ROW]

    async def drop_recorded(self) -> int:
        return 0

    async def claim_dead_nodes(self, node: str, takeover_s: float) -> list[OpenCall]:
        return []


def mirror_of(rows: Rows) -> JournalMirror:
    return JournalMirror(JournalStore(rows.apply, rows.node_calls, rows.drop_recorded, rows.claim_dead_nodes), "n1",
                         takeover_s=60, orphans=lambda taken: None)


def closed_row(row: OpenCall) -> OpenCall:
    return OpenCall(row.leg, row.node, row.entry, T0 + dt.timedelta(seconds=20), row.last_seen)


def closed_call_then_killed(directory: Path) -> None:
    j = CallJournal(directory)
    j.opened("a", call="a", channel="c1", started_at=T0.isoformat())
    j.answered("a", T0 + dt.timedelta(seconds=1))
    j.closed("a")  # its CDR went to the writer; the engine dies before the mirror sends the close
    j.close()


def test_a_call_closed_in_the_file_is_not_taken_back_from_its_still_open_row(tmp_path: Path) -> None:
    closed_call_then_killed(tmp_path)
    again = CallJournal(tmp_path)
    rows = Rows()
    mirror = mirror_of(rows)
    assert asyncio.run(mirror.load(again)) == 0
    assert again.pending == {}  # nothing for the resynchronisation to record as "incomplete"
    again.share(mirror)
    assert asyncio.run(mirror.flush())
    [batch] = rows.batches
    assert [(op["op"], op["leg"]) for op in batch] == [("close", "a")]  # its row is marked closed at last
    assert batch[0]["at"] and again.unshared_closes == {}
    again.close()
    third = CallJournal(tmp_path)  # PostgreSQL confirmed it: nothing left to remember or send
    assert third.unshared_closes == {}
    assert third.adopt_rows([closed_row(STILL_OPEN_ROW)]) == 0
    third.close()


def test_a_close_postgresql_never_confirmed_survives_a_second_quick_restart(tmp_path: Path) -> None:
    closed_call_then_killed(tmp_path)
    second = CallJournal(tmp_path)  # compacts the file: the unconfirmed close must stay in it
    second.share(mirror_of(Rows()))  # queued, never flushed: killed again at once
    second.close()
    third = CallJournal(tmp_path)
    assert list(third.unshared_closes) == ["a"]
    assert third.adopt_rows([STILL_OPEN_ROW]) == 0 and third.pending == {}
    third.close()


def test_a_batch_postgresql_refused_confirms_nothing(tmp_path: Path) -> None:
    closed_call_then_killed(tmp_path)
    again = CallJournal(tmp_path)
    rows = Rows()

    async def refuse(node: str, ops: Sequence[dict[str, Any]]) -> None:
        raise StoreError("open-calls journal store: bad row")

    rows.apply = refuse  # type: ignore[method-assign]
    mirror = mirror_of(rows)
    again.share(mirror)
    asyncio.run(mirror.flush())
    again.close()
    last = CallJournal(tmp_path)
    assert list(last.unshared_closes) == ["a"]  # sent again by the next engine
    last.close()


def test_a_calls_close_waits_for_its_cdr_to_be_in_the_spool(tmp_path: Path) -> None:
    """Killed between the end of a call and the fsync of its CDR: the call is still open in the file, so the
    next engine records it (incomplete) rather than nothing."""
    j = CallJournal(tmp_path)
    on_spooled = j.follow_spool()
    leg = str(record(7).leg_id)
    j.opened(leg, call=leg, channel="chan-7", started_at=T0.isoformat())
    j.closed(leg)
    assert leg not in j.pending  # no longer open for this engine's resynchronisation
    j.close()
    killed = CallJournal(tmp_path)
    assert list(killed.pending) == [leg] and killed.unshared_closes == {}
    on_spooled([record(8)])  # another call's CDR: changes nothing
    killed.close()
    j = CallJournal(tmp_path)
    on_spooled = j.follow_spool()
    j.closed(leg)
    on_spooled([record(7)])  # its CDR is on disk: now it is closed
    j.close()
    last = CallJournal(tmp_path)
    assert last.pending == {} and list(last.unshared_closes) == [leg]
    last.close()


async def test_on_spooled_hears_of_records_once_durable_and_never_of_ones_the_spool_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, heard = FakeStore(), []

    def disk_full(self: Spool, lines: Sequence[bytes]) -> list[Any]:
        raise SpoolError(f"CDR spool {self.directory}: cannot write: No space left on device (ENOSPC)")

    async with writer(tmp_path, store) as w:
        w.on_spooled = lambda records: heard.extend(r.leg_id for r in records)
        w.submit(record(1))
        assert await w.wait_for_drained(10)
        assert heard == [record(1).leg_id]
        monkeypatch.setattr(Spool, "append_lines", disk_full)
        w.submit(record(2))  # kept in memory only: its call must stay open in the journal
        assert await w.wait_for_drained(10)
    assert heard == [record(1).leg_id] and len(store.rows) == 2
