"""The open-calls journal's copy in PostgreSQL (callctl.cdr.journal.JournalMirror) around a fake store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callctl.cdr.journal import CallJournal, JournalMirror, JournalStore, OpenCall
from callctl.errors import StoreError, StoreUnavailable

LEG = "6aefd293-935d-5a65-b0cd-4bda9fbdf61e"
AT = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)


class FakeRows:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.fail: Exception | None = None
        self.rows: list[OpenCall] = []

    async def apply(self, node: str, ops: Sequence[dict[str, Any]]) -> None:
        if self.fail is not None:
            raise self.fail
        self.applied += ops

    async def node_calls(self, node: str) -> list[OpenCall]:
        return list(self.rows)

    async def drop_recorded(self) -> int:
        return 0

    async def claim_dead_nodes(self, node: str, takeover_s: float) -> list[OpenCall]:
        return []


def mirror(fake: FakeRows) -> JournalMirror:
    return JournalMirror(JournalStore(fake.apply, fake.node_calls, fake.drop_recorded, fake.claim_dead_nodes),
                         "node1", takeover_s=300, orphans=lambda rows: None)


async def test_operations_wait_in_order_while_postgresql_is_unreachable_and_a_refused_batch_is_not_retried(
        tmp_path: Path) -> None:
    fake = FakeRows()
    journal = CallJournal(tmp_path)
    m = mirror(fake)
    journal.share(m)
    fake.fail = StoreUnavailable("PostgreSQL at 127.0.0.1:1 refused the connection")
    journal.opened(LEG, call=LEG, channel="c1", started_at=AT.isoformat())
    journal.answered(LEG, AT)
    assert not await m.flush() and m.queued == 2
    fake.fail = None
    assert await m.flush() and [op["op"] for op in fake.applied] == ["open", "answer"]
    fake.fail = StoreError("conference store: a row PostgreSQL refuses")
    journal.closed(LEG)
    assert await m.flush() and m.queued == 0  # dropped, said once in the log; the file still has it
    journal.close()


async def test_an_engine_whose_journal_file_was_lost_takes_its_nodes_rows_back(tmp_path: Path) -> None:
    fake = FakeRows()
    fake.rows = [OpenCall(LEG, "node1", {"call": LEG, "channel": "c1", "started_at": AT.isoformat()}, None,
                          AT + dt.timedelta(seconds=30)),
                 OpenCall("0a5b1c2d-0000-4000-8000-000000000001", "node1",
                          {"channel": "c2", "started_at": AT.isoformat()}, AT + dt.timedelta(seconds=9), AT)]
    journal = CallJournal(tmp_path)  # no file: the disk state is gone
    assert journal.lost_its_file
    assert await mirror(fake).load(journal) == 2
    assert journal.pending["0a5b1c2d-0000-4000-8000-000000000001"]["closed_at"] == (AT + dt.timedelta(seconds=9)
                                                                                   ).isoformat()
    assert journal.previous_activity == AT + dt.timedelta(seconds=30)  # the node's last heartbeat
    journal.close()


async def test_with_its_file_an_engine_leaves_closed_rows_to_its_own_spool(tmp_path: Path) -> None:
    CallJournal(tmp_path).close()  # a file from a previous run
    fake = FakeRows()
    fake.rows = [OpenCall(LEG, "node1", {"started_at": AT.isoformat()}, AT, AT)]
    journal = CallJournal(tmp_path)
    assert await mirror(fake).load(journal) == 0
    journal.close()
