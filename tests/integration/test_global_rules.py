"""Rules that hold across nodes (issue 18): two Asterisk nodes, one engine each, one PostgreSQL;
SIPp calls each node straight (no Kamailio)."""

from __future__ import annotations

import itertools
import json
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
