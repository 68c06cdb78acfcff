"""The daemon against a real Asterisk 22, a real PostgreSQL and real SIP/RTP calls from SIPp."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import asyncpg
import pytest

from scripts.devstack import REPO, AsteriskInstance, free_port
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.integration

WELCOME = "+33900000001"  # answer, hello-world, hang up
MENU = "+33900000002"  # waits for input


def cdr_rows(database_url: str, **where: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT * FROM cdr ORDER BY started_at")
        finally:
            await conn.close()
        return [dict(r) for r in rows if all(dict(r).get(k) == v for k, v in where.items())]

    return asyncio.run(fetch())


def wait_for_cdrs(database_url: str, count: int, timeout_s: float = 20, **where: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def enough() -> bool:
        rows[:] = cdr_rows(database_url, **where)
        return len(rows) >= count

    wait_for(enough, timeout_s, f"{count} CDR row(s) matching {where}", interval_s=0.2)
    return rows


def test_call_is_answered_hears_the_prompt_and_leaves_one_cdr(daemon_factory: Any, asterisk: AsteriskInstance,
                                                               database_url: str) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)], caller="0612345678")
    assert result.ok, result.stderr
    talk_s = result.talk_s()
    assert talk_s > 0.9  # hello-world lasts about 1.3 s: the engine hung up after the prompt, not before
    finished = d.wait_for_log("call_finished")
    assert finished["outcome"] == "completed" and finished["call_id"]
    assert "0612345678" not in str(finished)  # numbers are masked in logs
    [row] = wait_for_cdrs(database_url, 1)
    assert d.stop() == 0  # the writer has flushed: nothing more can arrive
    assert len(cdr_rows(database_url)) == 1
    assert row["disposition"] == "ANSWERED"
    assert row["to_number"] == WELCOME and row["from_number"] == "+33612345678"
    assert row["hangup_cause"] == 16  # normal clearing: the engine ended the call after the prompt
    assert row["dialplan_version"] and row["flow"]
    duration = (row["ended_at"] - row["answered_at"]).total_seconds()
    assert abs(duration - talk_s) < 1.0, (duration, talk_s)
    assert row["billed_s"] >= int(duration)
    for column in ("started_at", "answered_at", "ended_at"):
        assert row[column].microsecond % 1000 == 0  # millisecond precision, UTC
        assert row[column].utcoffset().total_seconds() == 0


def test_caller_hanging_up_mid_flow_is_a_normal_end(daemon_factory: Any, asterisk: AsteriskInstance,
                                                    database_url: str) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, MENU, [("pause", 1500), ("bye", None)])
    assert result.ok, result.stderr
    finished = d.wait_for_log("call_finished")
    assert finished["outcome"] == "caller_hung_up"
    [row] = wait_for_cdrs(database_url, 1)
    assert row["disposition"] == "ANSWERED"
    assert abs((row["ended_at"] - row["answered_at"]).total_seconds() - result.talk_s()) < 1.0
    assert not d.tracebacks()


def test_asterisk_restart_reconnects_and_the_next_call_works(daemon_factory: Any, asterisk: AsteriskInstance,
                                                             database_url: str) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    asterisk.restart()
    d.wait_for_log("ari_disconnected", 20)
    wait_for(lambda: [e for e in d.events("ari_connected") if e.get("reconnects", 0) >= 1], 30,
             "the daemon to reconnect after the Asterisk restart")
    result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
    assert result.ok, result.stderr
    wait_for_cdrs(database_url, 1)
    status, body = d.get("/readyz")
    assert status == 200 and '"ari": "up"' in body
    assert not d.tracebacks()


def test_call_while_the_daemon_is_down_hears_the_fallback_announcement(asterisk: AsteriskInstance) -> None:
    # No daemon connected: Stasis() fails and extensions.conf plays an announcement, never dead air.
    result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
    assert result.ok, result.stderr
    # "All circuits are busy now. Please try your call again later." lasts about 4 s.
    assert result.talk_s() > 2.5


def test_sigterm_lets_a_call_in_progress_finish_and_writes_its_cdr(daemon_factory: Any, asterisk: AsteriskInstance,
                                                                   database_url: str) -> None:
    d = daemon_factory(shutdown_grace_s="30")
    d.wait_until_ready()
    proc, work = sipp.start_call(asterisk.sip_port, MENU, [("pause", 4000), ("bye", None)])
    d.wait_for_log("call_started")
    d.signal(signal.SIGTERM)
    d.wait_for_log("draining_calls")
    wait_for(lambda: d.get("/readyz")[0] == 503, 5, "/readyz to say 503 while draining")
    result = sipp.finish(proc, work)
    # The caller hung up itself after its 4 s pause: a BYE from the engine during the pause fails SIPp.
    assert result.ok, result.stderr
    assert result.talk_s() >= 4.0
    assert d.wait_exit(30) == 0
    assert d.events("call_finished")[0]["outcome"] == "caller_hung_up"
    [row] = wait_for_cdrs(database_url, 1)
    assert abs((row["ended_at"] - row["answered_at"]).total_seconds() - result.talk_s()) < 1.0


def test_sigterm_cuts_calls_after_the_grace_and_still_writes_their_cdr(daemon_factory: Any,
                                                                      asterisk: AsteriskInstance,
                                                                      database_url: str) -> None:
    d = daemon_factory(shutdown_grace_s="1")
    d.wait_until_ready()
    proc, work = sipp.start_call(asterisk.sip_port, MENU, [("wait_bye", None)])
    d.wait_for_log("call_started")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    result = sipp.finish(proc, work)
    assert result.ok, result.stderr  # the caller got a proper BYE
    assert d.events("call_finished")[0]["outcome"] == "cut_at_shutdown"
    wait_for_cdrs(database_url, 1)


@pytest.mark.parametrize(("overrides", "event", "phrase"), [
    ({"ari_url": "http://127.0.0.1:{port}/"}, "ari_unavailable", "is unreachable"),
    ({"ari_password": "wrong-password"}, "ari_auth_failed", "wrong user or password"),
])
def test_daemon_without_a_usable_asterisk_says_so_once_and_keeps_retrying(
        daemon_factory: Any, overrides: dict[str, str], event: str, phrase: str) -> None:
    overrides = {k: v.format(port=free_port()) for k, v in overrides.items()}
    d = daemon_factory(**overrides)
    line = d.wait_for_log(event, 20)
    assert phrase in line["error"]
    time.sleep(3)  # several retry periods (backoff capped at 2 s in tests)
    assert d.proc is not None and d.proc.poll() is None  # no crash loop
    assert len(d.events(event)) == 1  # one clear line, not one per retry
    status, body = d.get("/readyz")
    assert status == 503 and phrase in body
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert not d.tracebacks()


def test_daemon_with_postgresql_down_takes_calls_and_delivers_their_cdrs_when_it_returns(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, postgres: PostgresCluster) -> None:
    postgres.stop()
    try:
        d = daemon_factory()
        d.wait_until_ready()
        d.wait_for_log("cdr_store_unavailable", 20)
        result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
        assert result.ok, result.stderr
        finished = d.wait_for_log("call_finished")
        _status, body = d.get("/metrics")
        assert "callctl_cdr_queue_depth 1.0" in body  # spooled, waiting for PostgreSQL
    finally:
        postgres.start()
    d.wait_for_log("cdr_store_recovered", 30)
    [row] = wait_for_cdrs(database_url, 1)
    assert str(row["call_id"]) == finished["call_id"] and row["to_number"] == WELCOME
    wait_for(lambda: "callctl_cdr_queue_depth 0.0" in d.get("/metrics")[1], 10, "the spool to drain")
    assert d.stop() == 0
    assert len(cdr_rows(database_url)) == 1  # delivered once
    assert not d.tracebacks()


def test_metrics_and_health_endpoints(daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
    assert result.ok, result.stderr
    d.wait_for_log("call_finished")
    assert d.get("/livez")[0] == 200
    status, body = d.get("/metrics")
    assert status == 200
    for name in ("callctl_active_calls", 'callctl_calls_total{outcome="completed"} 1.0', "callctl_ari_reconnects",
                 "callctl_cdr_queue_depth", "callctl_event_loop_lag_seconds"):
        assert name in body


def test_dialplan_fallback_context_is_installed(asterisk: AsteriskInstance) -> None:
    out = asterisk.rx("dialplan show callctl-fallback")
    assert "Playback(all-circuits-busy-now&please-try-call-later)" in out


def test_asterisk_root_is_reused_on_a_second_run() -> None:
    out = subprocess.run([str(REPO / "scripts" / "asterisk-root.sh")], capture_output=True, text=True, check=True)
    assert "reusing cached root" in out.stdout


def test_daemon_killed_mid_call_is_replaced_and_the_new_one_adopts_the_call(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    first = daemon_factory()
    first.wait_until_ready()
    # The caller stays 10 s: the second engine must be up before it hangs up (a loaded machine took 4.7 s to start
    # it, against the 5 s this pause was: the call ended unadopted, adopted=0).
    proc, work = sipp.start_call(asterisk.sip_port, MENU, [("pause", 10000), ("bye", None)])
    started = first.wait_for_log("call_started")
    assert first.proc is not None
    first.proc.kill()  # kill -9: no drain, no CDR from this process
    first.proc.wait(10)
    second = daemon_factory()
    resynced = second.wait_for_log("ari_resynced", 30)
    assert resynced["adopted"] == 1
    adopted = second.wait_for_log("call_started", adopted=True)
    assert adopted["call_id"] == started["call_id"]  # the same leg keeps its id
    result = sipp.finish(proc, work)
    assert result.ok, result.stderr
    second.wait_for_log("call_finished")
    [row] = wait_for_cdrs(database_url, 1)
    assert str(row["call_id"]) == started["call_id"]
    # billed from the answer by the first engine, not from the adoption
    assert row["disposition"] == "ANSWERED"
    assert abs((row["ended_at"] - row["answered_at"]).total_seconds() - result.talk_s()) < 1.0
