"""Conference affinity across nodes (issue 18): members of one conference who call different Asterisk
nodes end up in one mixing bridge, on the node that holds the room's lease; when that node's engine
dies, the lease expires and another node takes the room over. Two real nodes, one PostgreSQL, SIPp
straight to each node. The engines live for the module: each test has its own conference."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.store import conferences as store
from tests.integration.test_conference import ACCESS, ari, db
from tests.integration.test_daemon import cdr_rows
from tests.support import sipp
from tests.support.affinity_nodes import LEASE_S, Node, affinity_nodes, cluster_database, node_engines
from tests.support.asterisk import Daemon, wait_for

pytestmark = pytest.mark.integration
__all__ = ["affinity_nodes", "cluster_database", "node_engines"]  # the fixtures, imported for this module


def book(database_url: str) -> tuple[str, str, str]:
    """A conference open now: (its id, the organizer's code, the one participant's code)."""
    async def run() -> tuple[str, str, str]:
        conn = await asyncpg.connect(database_url)
        try:
            now = dt.datetime.now(dt.UTC)
            conf, codes, _ = await store.save_booking(
                conn, subject="Affinity", starts_at=now, ends_at=now + dt.timedelta(hours=1),
                organizer="org@example.com", participants=["p0@example.com"], access_numbers=[ACCESS])
        finally:
            await conn.close()
        by_role = {c.role: c.code for c in codes}
        return str(conf.id), by_role["organizer"], by_role["participant"]

    return asyncio.run(run())


def caller(node: Node, code: str, then: list[tuple[str, object]], number: str) -> tuple[subprocess.Popen[str], Path]:
    """A caller on ``node`` who waits for the code prompt, keys CODE#, then does ``then``."""
    return sipp.start_call(node.asterisk.sip_port, ACCESS, [("pause", 1200), ("dtmf", code + "#"), *then],
                           caller=number, bye_timeout_s=60, remote_ip=node.sip_ip)


def room_channels(node: Node) -> list[list[str]]:
    """The channel names in each live conference bridge of ``node``'s Asterisk."""
    rooms = []
    for bridge in ari(node.asterisk, "bridges"):
        if bridge["id"].startswith("conf-"):
            rooms.append(sorted(ari(node.asterisk, f"channels/{c}")["name"] for c in bridge["channels"]))
    return rooms


def owner(database_url: str, conference_id: str) -> dict[str, Any] | None:
    rows = db(database_url, "SELECT node, expires_at < now() AS expired FROM conference_owner "
                            "WHERE conference_id = $1::text::uuid", conference_id)
    return rows[0] if rows else None


async def test_room_lease_one_owner_at_a_time_taken_over_only_once_expired(database_url: str) -> None:
    conf_id, _organizer, _participant = await asyncio.to_thread(book, database_url)
    room = uuid.UUID(conf_id)
    conn, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # Two nodes claiming at the same instant: exactly one wins, both are told which.
        won = await asyncio.gather(store.claim_room(conn, room, "a", 60), store.claim_room(second, room, "b", 60))
        assert won[0].node == won[1].node in ("a", "b")
        holder, other = won[0].node, "b" if won[0].node == "a" else "a"
        assert (await store.claim_room(conn, room, other, 60)).node == holder
        assert await store.renew_rooms(conn, [room], other, 60) == set()  # not its lease to renew
        assert await store.renew_rooms(conn, [room], holder, 60) == {room}
        await conn.execute("UPDATE conference_owner SET expires_at = now() - interval '1 s'")
        assert (await store.claim_room(conn, room, other, 60)).node == other  # taken over once expired
        assert await store.renew_rooms(conn, [room], holder, 60) == set()  # the old owner learns it lost it
        await store.release_room(conn, room, holder)  # not its lease any more: nothing happens
        assert (await store.room_owner(conn, room) or store.Owner("", dt.datetime.now(dt.UTC))).node == other
        await store.release_room(conn, room, other)
        assert await store.room_owner(conn, room) is None
        assert await store.renew_rooms(conn, [room], holder, 60) == {room}  # a room reopened after a release
    finally:
        await conn.close()
        await second.close()


def test_participant_on_one_node_joins_the_organizer_in_the_owner_nodes_bridge(
        affinity_nodes: dict[str, Node], node_engines: dict[str, Daemon], cluster_database: str) -> None:
    database_url = cluster_database
    conf_id, organizer, participant = book(database_url)
    a, b = node_engines["a"], node_engines["b"]
    org = caller(affinity_nodes["b"], organizer, [("pause", 10000), ("bye", None)], "33611000000")
    b.wait_for_log("conference_member_join", conference_id=conf_id, role="organizer")
    assert owner(database_url, conf_id) == {"node": "b", "expired": False}
    # The participant calls node A, keys the code there, and is handed to node B's room; then mutes
    # themself with *6, heard by the owner's room through the hop (4 s after the code: a loaded machine
    # can take more than a second to hop and join, and a key pressed before the join is not the room's).
    part = caller(affinity_nodes["a"], participant,
                  [("pause", 4000), ("dtmf", "*6"), ("pause", 1500), ("bye", None)], "33611000001")
    a.wait_for_log("conference_member_hop", conference_id=conf_id, owner="b")
    [members] = wait_for(lambda: [r for r in room_channels(affinity_nodes["b"]) if len(r) == 2], 20,
                         "node B's conference bridge holding the organizer and the hopped participant")
    assert [m.startswith("PJSIP/callctl-node-a-") for m in members].count(True) == 1  # the hop from node A
    assert room_channels(affinity_nodes["a"]) == []  # node A holds no room of its own
    b.wait_for_log("conference_member_muted", conference_id=conf_id, muted=True)
    for proc, work in (part, org):
        result = sipp.finish(proc, work)
        assert result.ok, result.stderr
    # CDRs: A's caller leg names the participant, once, with the node that held the room; A's leg to B
    # and B's incoming hop are the hop's own records and name nobody.
    [hopped] = wait_for(lambda: cdr_rows(database_url, person="p0@example.com"), 20, "the participant's CDR")
    assert hopped["conference_id"] == conf_id and json.loads(hopped["extra"])["room_node"] == "b"
    hop_legs = wait_for(lambda: [r for r in cdr_rows(database_url, disposition="NODE_HOP")
                                 if json.loads(r["extra"]).get("hop_leg") == str(hopped["leg_id"])], 20,
                        "node B's CDR of the incoming hop")
    assert [r["person"] for r in hop_legs] == [None]
    assert [r["person"] for r in cdr_rows(database_url, call_id=hopped["call_id"])] == ["p0@example.com", None]
    # The owner's timeline names the participant's leg on node A: one join, one leave.
    query = "SELECT person, what, leg_id FROM conference_event WHERE conference_id = $1::text::uuid"
    wait_for(lambda: [e for e in db(database_url, query, conf_id) if e["what"] == "leave"][1:], 20, "two leave rows")
    mine = sorted((e["what"], str(e["leg_id"])) for e in db(database_url, query, conf_id)
                  if e["person"] == "p0@example.com")
    assert mine == [("join", str(hopped["leg_id"])), ("leave", str(hopped["leg_id"]))]
    assert not a.tracebacks() and not b.tracebacks()


def test_owner_engine_killed_the_lease_expires_and_the_other_node_takes_the_room(
        affinity_nodes: dict[str, Node], node_engines: dict[str, Daemon], cluster_database: str) -> None:
    # Kills node B's engine: the last test of the module.
    database_url = cluster_database
    conf_id, organizer, _participant = book(database_url)
    a, b = node_engines["a"], node_engines["b"]
    first = caller(affinity_nodes["b"], organizer, [("pause", 1500), ("bye", None)], "33611000000")
    b.wait_for_log("conference_member_join", conference_id=conf_id, role="organizer")
    b.signal(signal.SIGKILL)
    b.wait_exit(10)
    sipp.finish(*first)  # node B's Asterisk ends the call without its engine
    wait_for(lambda: (owner(database_url, conf_id) or {}).get("expired"), LEASE_S + 10,
             "node B's lease expired (no engine renews it)")
    again = caller(affinity_nodes["a"], organizer, [("pause", 1500), ("bye", None)], "33611000000")
    a.wait_for_log("conference_member_join", conference_id=conf_id, role="organizer")
    assert owner(database_url, conf_id) == {"node": "a", "expired": False}
    wait_for(lambda: [r for r in room_channels(affinity_nodes["a"]) if len(r) == 1], 10,
             "the organizer in node A's own bridge")
    assert not a.events("conference_member_hop", conference_id=conf_id)
    result = sipp.finish(*again)
    assert result.ok, result.stderr
    assert not a.tracebacks()


def test_owner_node_dead_the_caller_waits_for_the_lease_and_gets_in_on_its_own_node(
        affinity_nodes: dict[str, Node], node_engines: dict[str, Daemon], cluster_database: str) -> None:
    # Kills node B's Asterisk: after the test of B's engine, the last of the module. Node B held the
    # room a moment ago (its lease, written here, still runs) and is gone: the hop fails, the caller
    # hears music until the lease expires, then node A takes the room and the caller is in.
    database_url = cluster_database
    conf_id, organizer, _participant = book(database_url)
    node_b = affinity_nodes["b"].asterisk
    assert node_b.proc is not None
    os.killpg(node_b.proc.pid, signal.SIGKILL)
    node_b.proc.wait(10)
    # Still running when the caller has keyed the code (about 5 s from now): B died a moment ago.
    db(database_url, "INSERT INTO conference_owner (conference_id, node, expires_at) "
                     "VALUES ($1::text::uuid, 'b', now() + interval '8 s') RETURNING node", conf_id)
    a = node_engines["a"]
    call = caller(affinity_nodes["a"], organizer, [("pause", 9000), ("bye", None)], "33611000000")
    failed = a.wait_for_log("conference_owner_unreachable", 20, conference_id=conf_id, owner="b")
    assert failed["status"] != "noanswer"  # refused at once: node B's contact is known unreachable
    a.wait_for_log("conference_room_taken_over", 20, conference_id=conf_id, node="a")
    a.wait_for_log("conference_member_join", 10, conference_id=conf_id, role="organizer")
    assert owner(database_url, conf_id) == {"node": "a", "expired": False}
    wait_for(lambda: [r for r in room_channels(affinity_nodes["a"]) if len(r) == 1], 10,
             "the organizer in node A's own bridge")
    result = sipp.finish(*call)
    assert result.ok, result.stderr
    assert not a.tracebacks()
