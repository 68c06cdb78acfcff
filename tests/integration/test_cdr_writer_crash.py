"""The CDR writer killed (SIGKILL) after PostgreSQL committed its batches but before their ack reached the
spool (branch wt-writer: the acks are written by the writer's own spool thread, at most once a second):
the next writer replays those records and PostgreSQL ends up with each exactly once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from callctl.cdr.writer import CdrWriter
from callctl.store import cdrs
from callctl.store.db import connect
from scripts.devstack import REPO

pytestmark = pytest.mark.integration

RECORDS = 1200

FIRST = 100

# The first writer: everything into PostgreSQL, the acks deferred for an hour (only the first wave's is
# written), then it says so and waits to be killed.
CHILD = f"""
FIRST = {FIRST}
import asyncio, sys
from pathlib import Path
from callctl.cdr.writer import CdrWriter
from callctl.store.cdrs import PgCdrStore
from tests.unit.test_cdr_spool import record

async def main() -> None:
    url, spool, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    w = CdrWriter(url, spool, store_factory=PgCdrStore, ack_interval_s=3600.0)
    await w.__aenter__()
    for wave in (range(FIRST), range(FIRST, n)):  # the first wave's ack is written, the second's deferred
        for i in wave:
            w.submit(record(i))
        assert await w.wait_for_drained(60)
    print("drained", w.written_total, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def count_rows(database_url: str) -> tuple[int, int]:
    conn = await connect(database_url)
    try:
        return await cdrs.count(conn), await cdrs.count_legs(conn)
    finally:
        await conn.close()


def acked_lines(spool: Path) -> int:
    path = spool / "ack.json"
    return int(json.loads(path.read_text())["lines"]) if path.exists() else 0


def run_and_kill_first_writer(database_url: str, spool: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, database_url, str(spool), str(RECORDS)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the child has drained (or died)
        assert line.split() == ["drained", str(RECORDS)], line
    finally:
        child.kill()  # SIGKILL: no close, no last ack
        child.communicate(timeout=10)


async def test_writer_killed_between_postgresql_and_the_ack_replays_without_duplicates(
        database_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    await asyncio.to_thread(run_and_kill_first_writer, database_url, spool)
    assert await count_rows(database_url) == (RECORDS, RECORDS)
    acked = acked_lines(spool)
    assert acked == FIRST  # killed with records in PostgreSQL whose ack never reached the spool

    async with CdrWriter(database_url, spool, store_factory=cdrs.PgCdrStore) as w:
        assert await w.wait_for_drained(30)
        assert (w.written_total, w.skipped_total) == (0, RECORDS - acked)  # replayed, none written twice
    assert await count_rows(database_url) == (RECORDS, RECORDS)
    assert not list(spool.glob("cdr-*.copy"))  # all acknowledged at close
