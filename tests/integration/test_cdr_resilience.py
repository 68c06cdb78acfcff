"""No CDR lost or duplicated: PostgreSQL down in the middle of a SIPp run, the engine killed mid-run."""

from __future__ import annotations

import time
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration.test_daemon import MENU, WELCOME, cdr_rows, wait_for_cdrs
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.integration


def test_postgresql_down_for_10_s_during_100_calls_leaves_exactly_100_cdrs(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, postgres: PostgresCluster) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    proc, work = sipp.start_call(asterisk.sip_port, WELCOME, [("wait_bye", None)], calls=100, rate=10,
                                 concurrent=40, timeout_s=120)
    wait_for(lambda: len(d.events("call_finished")) >= 10, 30, "the first calls to finish")
    postgres.stop()
    try:
        d.wait_for_log("cdr_store_unavailable", 30)
        finished_before = len(d.events("call_finished"))
        time.sleep(10)  # the outage itself, not a synchronisation: calls go on meanwhile
        finished_during = len(d.events("call_finished")) - finished_before
    finally:
        postgres.start()
    assert finished_during >= 20, finished_during  # their CDRs had to wait for PostgreSQL
    result = sipp.finish(proc, work, timeout_s=180)
    assert result.ok, result.stderr
    d.wait_for_log("cdr_store_recovered", 60)
    rows = wait_for_cdrs(database_url, 100, timeout_s=60)
    assert len(rows) == 100 and len({r["leg_id"] for r in rows}) == 100
    assert d.stop() == 0  # the writer has flushed: nothing more can arrive
    assert len(cdr_rows(database_url)) == 100
    assert len(d.events("call_finished")) == 100


def test_engine_killed_mid_run_loses_no_cdr_of_the_calls_it_took(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    first = daemon_factory()
    first.wait_until_ready()
    # Calls that stay in the menu 5 s each, so many are up when the engine dies; it dies once it took
    # them all (none meets the fallback, which would hang up before the caller does) and some ended.
    proc, work = sipp.start_call(asterisk.sip_port, MENU, [("pause", 5000), ("bye", None)], calls=30, rate=5,
                                 concurrent=30, timeout_s=120)
    wait_for(lambda: len(first.events("call_started")) == 30 and len(first.events("call_finished")) >= 5, 30,
             "every call taken and some finished")
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait(10)
    first.close_pipes()  # every line the first engine wrote is read: what it had started and finished
    in_flight = ({e["call_id"] for e in first.events("call_started")}
                 - {e["call_id"] for e in first.events("call_finished")})
    assert len(in_flight) >= 3, in_flight  # calls were up when the engine died
    second = daemon_factory()  # same spool folder: it replays what the first one spooled
    assert second.wait_for_log("ari_resynced", 30)["adopted"] >= 1  # calls still up are taken over
    result = sipp.finish(proc, work, timeout_s=180)
    taken = {e["call_id"] for d in (first, second) for e in d.events("call_started")}
    wait_for(lambda: {str(r["call_id"]) for r in cdr_rows(database_url)} >= taken, 60,
             "a CDR for every call either engine took")
    rows = cdr_rows(database_url)
    assert len(rows) == len({r["leg_id"] for r in rows}) == len(taken)  # none lost, none twice
    assert in_flight <= {str(r["call_id"]) for r in rows}  # including the calls up when it died
    # Each caller hung up itself after its 5 s: none was cut by the kill or the adoption.
    assert result.ok, result.stderr
