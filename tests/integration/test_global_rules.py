"""Rules that hold across nodes (issue 18): two Asterisk nodes, one engine each, one PostgreSQL;
SIPp calls each node straight (no Kamailio)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_daemon import cdr_rows
from tests.integration.test_lines_calls import PHONE_IP
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.nodes import Node, nodes_database_url, two_nodes  # noqa: F401 - the fixtures
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


_DIDS = itertools.count(1)


def line_user(database_url: str, *, extra_channels: int, credit: str, tmp_path: Path) -> dict[str, Any]:
    """An account with one SIP user (its own DID: the nodes' database is shared by the module's tests),
    ``credit`` EUR on it, France at 0.60 EUR/min."""
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR",
              "--extra-channels", str(extra_channels))
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice",
               "--number", f"+3317000{next(_DIDS):04d}")
    user["account_id"] = acc["id"]
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,2,0.60,EUR\n")
    assert run_cli(database_url, "rates", "import", str(deck), "--deck", "test").returncode == 0
    assert run_cli(database_url, "credit", "add", "--account", acc["id"], credit).returncode == 0
    return user


@contextmanager
def far_ends(nodes: list[Node], calls: int) -> Iterator[None]:
    """Each node's PSTN trunk answers up to ``calls`` calls (then waits for their BYE); stopped at the end
    however many came."""
    procs = [sipp.start_far_end(node.asterisk.trunk_port, "answer", calls=calls) for node in nodes]
    try:
        yield
    finally:
        for proc, _work in procs:
            proc.kill()
            proc.communicate()


def place_calls(nodes: list[Node], user: dict[str, Any], per_node: int, talk_ms: int) -> list[sipp.SippResult]:
    """``per_node`` calls from the user's phone on every node, all started at once."""
    auth = (user["sip_username"], user["sip_password"])
    started = [sipp.start_call(node.asterisk.sip_port, f"012345678{i}", [("pause", talk_ms), ("bye", None)],
                               caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
               for i in range(per_node) for node in nodes]
    return [sipp.finish(*s) for s in started]


def wait_for_account_cdrs(database_url: str, account_id: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        rows = [r for r in cdr_rows(database_url) if str(r["account_id"]) == account_id]
        return rows if len(rows) >= count else None

    return list(wait_for(enough, 30, f"{count} CDRs of account {account_id}"))


def test_a_users_calls_on_two_nodes_at_once_get_through_only_up_to_the_channel_limit(
        two_nodes: list[Node], nodes_database_url: str, tmp_path: Path) -> None:  # noqa: F811
    database_url = nodes_database_url
    # Limit 2; four 4-hour holds fit.
    user = line_user(database_url, extra_channels=1, credit="1000", tmp_path=tmp_path)
    with far_ends(two_nodes, calls=2):
        place_calls(two_nodes, user, per_node=2, talk_ms=3000)
        rows = wait_for_account_cdrs(database_url, user["account_id"], 4 + 2)  # four calls, two legs through
    refused = [r for r in rows if r["direction"] == "inbound" and json.loads(r["extra"]).get("refused")]
    assert [json.loads(r["extra"])["refused"] for r in refused] == ["channel_limit"] * 2
    answered = [r for r in rows if r["direction"] == "outbound" and r["disposition"] == "ANSWERED"]
    assert len(answered) == 2
    assert db(database_url, "SELECT * FROM line_channel_slot") == []  # every slot given back
    assert {n.node_id for n in two_nodes} <= {r["node_id"] for r in db(database_url, "SELECT * FROM engine_node")}

    # Slots left behind by dead engines: node1's engine killed while one of its calls was up (the call
    # ended meanwhile), and a node3 gone for good (no heartbeat for longer than the lease).
    node1 = two_nodes[0]
    db(database_url, "INSERT INTO engine_node (node_id, heartbeat_at) VALUES ('node3', now() - interval '1 hour')")
    db(database_url, "INSERT INTO line_channel_slot (node_id, channel_id, user_id) VALUES "
       "('node1', 'callctl-gone.1', $1::uuid), ('node3', 'callctl-elsewhere.1', $1::uuid)", user["id"])
    assert node1.engine.proc is not None
    node1.engine.proc.kill()
    node1.engine.wait_exit()
    restarted = node1.start_engine()
    assert restarted.wait_for_log("line_slots_reconciled")["freed"] == 1  # its channel is gone from Asterisk
    wait_for(lambda: [e for n in two_nodes for e in n.engine.events("line_slots_of_dead_nodes_freed")], 20,
             "a live engine to free the dead node's slot")
    assert db(database_url, "SELECT * FROM line_channel_slot") == []


def test_one_accounts_prepaid_calls_on_two_nodes_at_once_never_overdraw(
        two_nodes: list[Node], nodes_database_url: str, tmp_path: Path) -> None:  # noqa: F811
    database_url = nodes_database_url
    # 0.60 EUR/min and 0.60 EUR of credit: 60 s, held whole by the first call authorised (on either node).
    user = line_user(database_url, extra_channels=3, credit="0.60", tmp_path=tmp_path)
    with far_ends(two_nodes, calls=2):
        place_calls(two_nodes, user, per_node=2, talk_ms=2000)
        rows = wait_for_account_cdrs(database_url, user["account_id"], 4 + 1)  # four calls, one leg paid for
    answered = [r for r in rows if r["direction"] == "outbound" and r["disposition"] == "ANSWERED"]
    assert len(answered) == 1
    refused = [json.loads(r["extra"]).get("refused", "") for r in rows if r["direction"] == "inbound"]
    assert sum(1 for why in refused if "credit" in why) == 3, refused
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  user["account_id"])
    assert credit["reserved"] == 0
    assert credit["balance"] == Decimal("0.60") - answered[0]["cost"] >= 0


MENU = "+33900000002"  # dialplan/: answers and waits for a key


def wait_for_open_call(database_url: str, node: Node) -> dict[str, Any]:
    """The node's answered call, as its journal row in PostgreSQL shows it."""
    query = ("SELECT leg_id, entry FROM open_call WHERE node_id = $1 AND entry ? 'answered_at' "
             "AND closed_at IS NULL AND entry->>'called' = $2")
    rows = wait_for(lambda: db(database_url, query, node.node_id, MENU),
                    15, f"an answered call of {node.node_id} in open_call")
    return dict(rows[0])


def wait_for_leg_cdr(database_url: str, leg_id: Any) -> dict[str, Any]:
    rows = wait_for(lambda: [r for r in cdr_rows(database_url) if r["leg_id"] == leg_id], 30,
                    f"the CDR of leg {leg_id}")
    return dict(rows[0])


def test_a_call_whose_engine_lost_its_disk_still_gets_its_cdr_from_the_database(
        two_nodes: list[Node], nodes_database_url: str) -> None:  # noqa: F811
    database_url, node = nodes_database_url, two_nodes[1]
    call = sipp.start_call(node.asterisk.sip_port, MENU, [("pause", 4000), ("bye", None)])
    row = wait_for_open_call(database_url, node)
    assert node.engine.proc is not None
    node.engine.proc.kill()  # kill -9, then its disk state is lost: journal file and CDR spool
    node.engine.wait_exit()
    sipp.finish(*call)  # the caller hangs up while no engine runs on the node
    shutil.rmtree(node.workdir)
    node.workdir.mkdir()
    node.start_engine().wait_for_log("calls_recovered_from_journal", 60)  # a start on a loaded machine
    cdr = wait_for_leg_cdr(database_url, row["leg_id"])
    extra = json.loads(cdr["extra"])
    assert extra["incomplete"] is True and extra["outcome"] == "ended_without_engine"
    assert cdr["answered_at"] is not None and cdr["ended_at"] >= cdr["answered_at"]
    wait_for(lambda: not db(database_url, "SELECT 1 FROM open_call WHERE leg_id = $1", row["leg_id"]), 15,
             "the journal row to go once its CDR is in")


def test_the_open_calls_of_a_node_gone_for_good_are_recorded_by_another_engine(
        two_nodes: list[Node], nodes_database_url: str) -> None:  # noqa: F811
    # Last of the module: node1 does not come back.
    database_url, gone, survivor = nodes_database_url, two_nodes[0], two_nodes[1]
    call_proc, _work = sipp.start_call(gone.asterisk.sip_port, MENU, [("pause", 60000), ("bye", None)])
    try:
        row = wait_for_open_call(database_url, gone)
        assert gone.engine.proc is not None and gone.asterisk.proc is not None
        gone.engine.proc.kill()
        os.killpg(gone.asterisk.proc.pid, signal.SIGKILL)  # the whole node: its Asterisk and its calls too
        gone.engine.wait_exit()
        gone.asterisk.proc.wait(timeout=10)
        try:
            survivor.engine.wait_for_log("open_calls_of_dead_nodes_taken_over", timeout_s=30)
        except AssertionError:  # shown with the failure: who renewed what, which rows were left
            print("engine_node:", db(database_url, "SELECT *, now() FROM engine_node"),
                  "open_call:", db(database_url, "SELECT * FROM open_call"))
            raise
        cdr = wait_for_leg_cdr(database_url, row["leg_id"])
    finally:
        call_proc.kill()
        call_proc.communicate()
    extra = json.loads(cdr["extra"])
    assert (extra["incomplete"], extra["taken_over"], extra["node"]) == (True, True, gone.node_id)
    [node_row] = db(database_url, "SELECT heartbeat_at FROM engine_node WHERE node_id = $1", gone.node_id)
    # Never later than its engine's last sign of life (or the answer, if that came after).
    assert cdr["ended_at"] <= max(node_row["heartbeat_at"], cdr["answered_at"])
