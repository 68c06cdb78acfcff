"""CDR pipeline benchmark on a throwaway PostgreSQL 15 (fsync on): CdrWriter vs raw COPY of the same rows.

    .venv/bin/python -m bench.cdr_pipeline [--records 20000] [--repeat 5] [--rate 500] [--seconds 5]

Prints rows/s for: raw COPY into cdr (the ceiling: binary COPY of rows built before the clock starts),
raw COPY of the writer's text lines encoded before the clock starts (what PostgreSQL alone costs on the
writer's format), each insert path the writer could use (unnest multi-row INSERT .. ON CONFLICT, COPY
into a temp table + INSERT .. ON CONFLICT, COPY of encoded lines straight into cdr; batches of 500),
the whole CdrWriter (submit -> encode + spool fsync -> PostgreSQL, burst of N; raw COPY and the writer
alternate --repeat times and the medians are printed, the machine being shared), and the submit-to-
durable-in-PostgreSQL latency (p50/p99) at a steady submit rate, with the load average before and
after (the machine may be shared). Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from callctl.cdr.writer import CdrWriter
from callctl.store import cdrs
from callctl.store.db import connect
from callctl.store.migrate import migrate
from tests.support.postgres import MIGRATIONS, PostgresCluster
from tests.support.waiting import wait_for_async
from tests.unit.test_cdr_spool import record

GOAL_RATIO = 0.5  # issue 17: at the machine's usual load, not only when it is quiet


class TimedStore(cdrs.PgCdrStore):
    """PgCdrStore noting when each leg became durable (the INSERT statement committed)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.durable_at: dict[Any, float] = {}

    async def insert(self, records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        inserted = await super().insert(records, lines)
        now = time.perf_counter()
        for r in records:
            self.durable_at.setdefault(r.leg_id, now)
        return inserted


async def fresh(cluster: PostgresCluster, name: str, records: Sequence[CdrRecord] = ()) -> str:
    """A migrated database, with the monthly partitions of ``records`` made: raw COPY and the writer then
    write into the same partition, made before either clock starts (as a running writer made the month's
    partition when it connected, weeks before; without it, raw COPY filled cdr_default while the writer
    created a partition, indexes and all, inside its timed run)."""
    url = await asyncio.to_thread(cluster.new_database, name)
    await migrate(url, MIGRATIONS)
    if records:
        conn = await connect(url)
        try:
            await cdrs.ensure_partitions(conn, [r.started_at for r in records])
        finally:
            await conn.close()
    return url


async def raw_copy(url: str, records: list[CdrRecord]) -> float:
    conn = await connect(url)
    try:
        rows = [cdrs.row(r) for r in records]
        started = time.perf_counter()
        await conn.copy_records_to_table("cdr", records=rows, columns=[n for n, _ in cdrs.COLUMNS])
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def raw_copy_text(url: str, records: list[CdrRecord]) -> float:
    conn = await connect(url)
    try:
        data = memoryview(b"".join(copyline.encode(r) for r in records))
        started = time.perf_counter()
        await conn.copy_to_table("cdr", source=data, columns=list(copyline.COLUMN_NAMES), format="text")
        return len(records) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def batched(url: str, records: list[CdrRecord], how: str, batch: int = 500) -> float:
    conn = await connect(url)
    insert = {"unnest": cdrs.insert_cdrs, "copy": cdrs.insert_cdrs_copy, "fast": cdrs.insert_cdrs_fast}[how]
    try:
        await cdrs.ensure_partitions(conn, [r.started_at for r in records])
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            await insert(conn, records[i:i + batch])
        return len(records) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def writer_burst(url: str, records: list[CdrRecord], spool: Path, *, cold: bool = False) -> float:
    """Rows/s of a burst through the whole writer. Its clock starts once the writer is connected (it
    connects at start; raw COPY's clock also starts on an open connection), unless ``cold``."""
    async with CdrWriter(url, spool, store_factory=cdrs.PgCdrStore) as w:
        if not cold:
            await wait_for_async(lambda: w.store_up, "the writer's connection to PostgreSQL", 30, 0.005)
        started = time.perf_counter()
        for r in records:
            w.submit(r)
        assert await w.wait_for_drained(600), "writer did not drain"
        return len(records) / (time.perf_counter() - started)


async def writer_latency(url: str, records: list[CdrRecord], spool: Path, rate: float) -> list[float]:
    store: list[TimedStore] = []

    def factory(u: str) -> TimedStore:
        store.append(TimedStore(u))
        return store[0]

    submitted: dict[Any, float] = {}
    async with CdrWriter(url, spool, store_factory=factory) as w:
        start = time.perf_counter()
        for i, r in enumerate(records):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            submitted[r.leg_id] = time.perf_counter()
            w.submit(r)
        assert await w.wait_for_drained(600), "writer did not drain"
    return sorted(store[0].durable_at[leg] - at for leg, at in submitted.items())


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


async def run(n: int, rate: float, seconds: float, repeat: int, cold: bool) -> None:
    cluster = PostgresCluster.throwaway_cluster()
    await asyncio.to_thread(cluster.start)
    try:
        records = [record(i) for i in range(n)]
        with tempfile.TemporaryDirectory(prefix="callctl-bench-") as tmp:
            load_before = os.getloadavg()
            # The ratio: raw COPY and the writer alternately, each on a fresh database, ``repeat`` times (a
            # neighbour's burst then hits both alike); the median pair is the figure.
            pairs = []
            for k in range(repeat):
                copy = await raw_copy(await fresh(cluster, f"b_copy{k}", records), records)
                pairs.append((copy, await writer_burst(await fresh(cluster, f"b_writer{k}", records), records,
                                                       Path(tmp) / f"burst{k}", cold=cold)))
            text_rps = await raw_copy_text(await fresh(cluster, "b_text"), records)
            unnest_rps = await batched(await fresh(cluster, "b_unnest"), records, "unnest")
            temp_rps = await batched(await fresh(cluster, "b_temp"), records, "copy")
            fast_rps = await batched(await fresh(cluster, "b_fast"), records, "fast")
            paced = [record(i) for i in range(n, n + int(rate * seconds))]
            lat = await writer_latency(await fresh(cluster, "b_latency"), paced, Path(tmp) / "paced", rate)
        load_after = os.getloadavg()
        print(f"records: {n} (PostgreSQL 15, fsync on, one connection; insert batches of 500; "
              f"writer {'cold: clock started before it connected' if cold else 'connected before its clock starts'})")
        print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
        copies = sorted(c for c, _ in pairs)
        writers = sorted(w for _, w in pairs)
        ratios = sorted(w / c for c, w in pairs)
        print(f"raw COPY into cdr:                        {statistics.median(copies):10,.0f} rows/s "
              f"(median of {repeat}: {copies[0]:,.0f} - {copies[-1]:,.0f})")
        print(f"raw COPY of encoded text lines into cdr:  {text_rps:10,.0f} rows/s")
        print(f"INSERT .. SELECT unnest(..) ON CONFLICT:  {unnest_rps:10,.0f} rows/s")
        print(f"COPY to temp + INSERT .. ON CONFLICT:     {temp_rps:10,.0f} rows/s")
        print(f"encode + COPY lines, temp path on replay: {fast_rps:10,.0f} rows/s")
        print(f"CdrWriter (submit -> spool -> PostgreSQL):{statistics.median(writers):10,.0f} rows/s "
              f"(median of {repeat}: {writers[0]:,.0f} - {writers[-1]:,.0f})")
        print(f"CdrWriter / raw COPY, run by run:         {statistics.median(ratios):10.2f} x "
              f"(median of {repeat}: {ratios[0]:.2f} - {ratios[-1]:.2f})")
        ratio = statistics.median(ratios)
        print(f"GOAL CdrWriter >= {GOAL_RATIO:g} x raw COPY (median, at load {load_after[0]:.2f}): {ratio:.2f}  "
              f"{'PASS' if ratio >= GOAL_RATIO else 'FAIL'}")
        print(f"submit -> durable in PostgreSQL at {rate:.0f}/s for {seconds:.0f} s ({len(lat)} records): "
              f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {lat[-1] * 1000:.1f} ms, "
              f"mean {statistics.fmean(lat) * 1000:.1f} ms")
    finally:
        await asyncio.to_thread(cluster.destroy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=500.0, help="submits/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--repeat", type=int, default=5, help="raw COPY / writer pairs for the ratio")
    parser.add_argument("--cold", action="store_true",
                        help="start the writer's clock before it is connected (the method before 2026-12-03)")
    args = parser.parse_args()
    asyncio.run(run(args.records, args.rate, args.seconds, args.repeat, args.cold))


if __name__ == "__main__":
    main()
