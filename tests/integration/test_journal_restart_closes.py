"""Nothing lost or duplicated across an engine restart when a call ended just before the engine died: its
``close`` in the open-calls journal file, not yet in PostgreSQL (the mirror's 0.2 s), its real CDR in the
local spool. The next engine must keep the real CDR and record no second, "incomplete" one; and a real
CDR replaces an incomplete one of the same leg whatever the order they reach PostgreSQL in."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.store import cdrs
from scripts.devstack import AsteriskInstance
from tests.integration.test_conference_offline import REFUSED, db_proxy  # noqa: F401 - the fixture
from tests.integration.test_daemon import MENU
from tests.integration.test_global_rules import wait_for_leg_cdr
from tests.integration.test_lines_cli import db
from tests.support import sipp
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for
from tests.unit.test_cdr_spool import record

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def cdr_table_locked(database_url: str) -> Iterator[None]:
    """Writes to the cdr table wait (SHARE lock: reads go on) until the block ends; a thread holds it."""
    held, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE cdr IN SHARE MODE")
                held.set()
                await asyncio.to_thread(release.wait)
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failure.append(exc)
            held.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    held.wait(30)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        release.set()
        thread.join(30)


def spooled(spool: Path, leg_id: str) -> bool:
    return any(line.startswith(leg_id) for seg in spool.glob("cdr-*.copy")
               for line in seg.read_text(errors="replace").splitlines())


def closed_in_file(spool: Path, leg_id: str) -> bool:
    """The call's close is in the open-calls journal file (written once its CDR is in the spool)."""
    path = spool / "open-calls.jsonl"
    return path.exists() and any(line.startswith("{") and json.loads(line).get("op") == "close"
                                 and json.loads(line).get("leg") == leg_id
                                 for line in path.read_text(errors="replace").splitlines() if line.endswith("}"))


def test_a_call_closed_in_the_file_but_not_in_postgresql_keeps_its_real_cdr_across_a_restart(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path,
        db_proxy: tuple[CuttableProxy, str]) -> None:  # noqa: F811
    proxy, proxied_url = db_proxy
    first = daemon_factory(database_url=proxied_url)
    first.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, MENU, [("pause", 3000), ("bye", None)])
    leg = first.wait_for_log("call_started")["call_id"]
    wait_for(lambda: db(database_url, "SELECT 1 FROM open_call WHERE leg_id = $1::uuid AND closed_at IS NULL "
                                      "AND entry ? 'answered_at'", leg), 15, "the call's journal row in PostgreSQL")
    # PostgreSQL out of the first engine's reach from now on: the close and the CDR wait on its disk.
    proxy.upstream = REFUSED
    proxy.cut()
    assert sipp.finish(*call).ok
    first.wait_for_log("call_finished", outcome="caller_hung_up")
    wait_for(lambda: spooled(tmp_path / "spool", leg), 10, "the real CDR durable in the spool")
    wait_for(lambda: closed_in_file(tmp_path / "spool", leg), 10, "the call closed in the journal file")
    assert first.proc is not None
    first.proc.kill()  # kill -9 before the close reached PostgreSQL
    first.proc.wait(10)
    [row] = db(database_url, "SELECT closed_at FROM open_call WHERE leg_id = $1::uuid", leg)
    assert row["closed_at"] is None  # the window: closed in the file, open in PostgreSQL
    # The replayed CDR waits for the lock: the next engine reads its rows while the CDR is not in yet.
    with cdr_table_locked(database_url):
        second = daemon_factory()  # same spool folder, PostgreSQL reachable
        second.wait_for_log("ari_resynced", 30)
        wait_for(lambda: db(database_url, "SELECT 1 FROM open_call WHERE leg_id = $1::uuid "
                                          "AND closed_at IS NOT NULL", leg), 15,
                 "the close the file had, sent to PostgreSQL by the next engine")
    assert not second.events("open_calls_read_from_database")  # nothing taken back as still open
    assert not second.events("calls_recovered_from_journal")  # no second, incomplete CDR of the call
    cdr = wait_for_leg_cdr(database_url, uuid.UUID(leg))
    extra = json.loads(cdr["extra"])
    assert "incomplete" not in extra and extra["outcome"] == "caller_hung_up"
    assert cdr["billed_s"] >= 3  # the caller's 3 s from the answer, as the first engine saw them end
    wait_for(lambda: not db(database_url, "SELECT 1 FROM open_call WHERE leg_id = $1::uuid", leg), 15,
             "the journal row to go once its CDR is in")
    assert not second.tracebacks()


@pytest.mark.parametrize("incomplete_first", [True, False], ids=["incomplete-first", "real-first"])
@pytest.mark.parametrize("path", ["copy", "unnest", "same-batch"])
async def test_the_real_cdr_of_a_leg_wins_over_an_incomplete_one_whatever_the_order(
        database_url: str, incomplete_first: bool, path: str) -> None:
    real = record(1, extra={"outcome": "caller_hung_up"})
    incomplete = record(1, call_id=real.call_id, ended_at=real.answered_at, hangup_reason="ended while no engine",
                        extra={"outcome": "ended_without_engine", "incomplete": True,
                               "ended_before": dt.datetime.now(dt.UTC).isoformat()})
    order = [incomplete, real] if incomplete_first else [real, incomplete]
    conn = await asyncpg.connect(database_url)
    try:
        if path == "same-batch":
            await cdrs.insert_cdrs_fast(conn, order)
        else:
            insert = cdrs.insert_cdrs_fast if path == "copy" else cdrs.insert_cdrs
            for one in order:
                await insert(conn, [one])
        [stored] = await cdrs.fetch_by_call_id(conn, real.call_id)
    finally:
        await conn.close()
    assert stored == real
