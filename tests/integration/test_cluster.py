"""The cluster (docs/scaling.md): SIPp calls through Kamailio onto two Asterisk nodes, one engine each,
and the faults a node survives: an Asterisk killed, an engine killed."""

from __future__ import annotations

import datetime as dt
import json
import signal
from typing import Any

import pytest

from tests.integration.test_daemon import cdr_rows, wait_for_cdrs
from tests.integration.test_lines_calls import PHONE_IP, line_user
from tests.integration.test_lines_cli import cli
from tests.support import sipp
from tests.support.asterisk import wait_for
from tests.support.cluster import Cluster, cluster

pytestmark = pytest.mark.integration
__all__ = ["cluster"]  # the fixture, imported for this module

WELCOME = "+33900000001"  # answer, hello-world, hang up
MENU = "+33900000002"  # waits for keys


def finished_counts(c: Cluster) -> list[int]:
    return [len(c.calls_finished(n)) for n in range(len(c.engines))]


def test_calls_spread_over_both_nodes_and_a_node_without_engine_refuses_so_kamailio_uses_the_other(
        cluster: Cluster) -> None:
    result = sipp.call(cluster.sip_port, WELCOME, [("wait_bye", None)], calls=6, rate=20, timeout_s=30)
    assert result.ok, result.stderr
    wait_for(lambda: sum(finished_counts(cluster)) == 6, 20, "6 calls finished over the two engines")
    assert min(finished_counts(cluster)) >= 2, finished_counts(cluster)  # round-robin: 3 and 3 unless failed over
    assert {row["disposition"] for row in wait_for_cdrs(cluster.database_url, 6)} == {"ANSWERED"}

    # kill -9 node 1's engine: its Asterisk stays up (it answers Kamailio's probes) but refuses new calls
    # with 503 before answering, and Kamailio sends each of them on to node 2.
    dead = cluster.engines[0]
    dead.signal(signal.SIGKILL)
    dead.wait_exit(10)
    before = finished_counts(cluster)
    result = sipp.call(cluster.sip_port, WELCOME, [("wait_bye", None)], calls=6, rate=20, timeout_s=30)
    assert result.ok, result.stderr  # every call answered
    wait_for(lambda: len(cluster.calls_finished(1)) == before[1] + 6, 20, "6 more calls finished on node 2")
    assert cluster.kamailio.active_nodes() == {cluster.node_address(0), cluster.node_address(1)}
    assert "answered 503 to INVITE" in cluster.kamailio.log_file.read_text()  # refused, then failed over
    # Refused before answering: node 1 kept no call (no CDR of its own, no fallback announcement).
    assert len(wait_for_cdrs(cluster.database_url, 12)) == 12


def test_calls_continue_on_the_surviving_node_when_an_asterisk_is_killed(cluster: Cluster) -> None:
    # Four callers wait in the menu, two on each node; then node 1's Asterisk dies (kill -9).
    held, work = sipp.start_call(cluster.sip_port, MENU, [("pause", 6000), ("bye", None)], calls=4, rate=20,
                                 timeout_s=30)
    wait_for(lambda: all(len(e.events("call_started")) == 2 for e in cluster.engines), 15,
             "two calls up on each node")
    lost = [e["call_id"] for e in cluster.engines[0].events("call_started")]
    assert cluster.nodes[0].proc is not None
    cluster.nodes[0].proc.kill()
    cluster.nodes[0].proc.wait(10)
    killed_at = dt.datetime.now(dt.UTC)
    cluster.wait_for_rotation({1}, timeout_s=10)
    # Out of rotation: no new call fails.
    result = sipp.call(cluster.sip_port, WELCOME, [("wait_bye", None)], calls=6, rate=20, timeout_s=30)
    assert result.ok, result.stderr
    wait_for(lambda: len(cluster.calls_finished(1)) >= 6, 20, "6 new calls finished on node 2")
    # The calls node 1 held still get their CDRs, from its engine: ended when its Asterisk went away
    # (billed no longer than certain), marked incomplete.
    finished = [cluster.engines[0].wait_for_log("call_finished", 20, call_id=call_id) for call_id in lost]
    assert {f["outcome"] for f in finished} == {"asterisk_lost"}
    wait_for_cdrs(cluster.database_url, 6 + 4, 20)
    by_call = {str(row["call_id"]): row for row in cdr_rows(cluster.database_url)}
    for call_id in lost:
        row: dict[str, Any] = by_call[call_id]
        extra = row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"])
        assert extra["incomplete"] is True and extra["outcome"] == "asterisk_lost", extra
        # ended when the engine saw its connection drop: a few milliseconds after the kill (the kernel
        # closes the socket at once), never at the engine's give-up or shutdown (before: 51 s billed)
        assert killed_at - dt.timedelta(seconds=10) < row["ended_at"] <= killed_at + dt.timedelta(seconds=1)
        assert row["ended_at"].isoformat() < extra["ended_before"]
    sipp.finish(held, work)  # node 2's callers hang up after 6 s; node 1's BYEs find nobody

    # Back when it answers again: in rotation, its engine reconnected, new calls reach it.
    cluster.nodes[0].start()
    cluster.wait_for_rotation({0, 1}, timeout_s=15)
    wait_for(lambda: [e for e in cluster.engines[0].events("ari_connected") if e.get("reconnects", 0) >= 1], 20,
             "node 1's engine reconnected")
    before = len(cluster.calls_finished(0))
    result = sipp.call(cluster.sip_port, WELCOME, [("wait_bye", None)], calls=4, rate=20, timeout_s=30)
    assert result.ok, result.stderr
    wait_for(lambda: len(cluster.calls_finished(0)) > before, 20, "new calls on node 1 again")


def test_a_sip_user_s_emergency_call_through_kamailio_is_routed_by_a_node_whose_engine_is_down(
        cluster: Cluster) -> None:
    # Emergency calls are never refused: with both engines dead, the node that takes the call routes it
    # itself (docs/gating.md). The user's INVITE is challenged; the retry with credentials must reach
    # the node that challenged it (another node's nonce would not match).
    user = line_user(cluster.database_url)
    cli(cluster.database_url, "account", "emergency", user["account_id"], "--enable", "--location", "Bat. B",
        "--verified")
    for engine in cluster.engines:
        engine.signal(signal.SIGKILL)
        engine.wait_exit(10)
    gateways = [sipp.start_far_end(node.emergency_port, "answer") for node in cluster.nodes]
    try:
        result = sipp.call(cluster.sip_port, "15", [("pause", 1500), ("bye", None)], caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
        assert result.ok, result.stderr
        reached = [n for n, (_proc, work) in enumerate(gateways)
                   if "INVITE sip:15@" in ((work / "messages.log").read_text(errors="replace")
                                           if (work / "messages.log").exists() else "")]
        assert len(reached) == 1, reached
    finally:
        for proc, work in gateways:
            proc.kill()
            sipp.finish(proc, work, timeout_s=10)
