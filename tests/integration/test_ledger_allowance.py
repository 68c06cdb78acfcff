"""Trial allowances (the plan's included seconds per user) held per call across engines and nodes
(issue 18): parallel calls of one trial user never get more than is left between them. On a real
PostgreSQL (two pools as two engines), then with real calls on two Asterisk nodes, one engine each."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.billing import service
from callctl.billing.decks import load_deck_file
from callctl.cdr.record import CdrRecord
from callctl.store import billing as store
from callctl.store import cdrs
from tests.integration.test_global_rules import far_ends, place_calls, wait_for_account_cdrs
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support.nodes import Node, nodes_database_url, two_nodes  # noqa: F401 - the fixtures
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ALLOWANCE_S = 3600  # billing/plans.yaml, plan trial
_DIDS = itertools.count(1)


def _used_cdr(account: uuid.UUID | str, user: uuid.UUID | str, seconds: int) -> CdrRecord:
    """An included call of the user an hour ago: ``seconds`` of the allowance used."""
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return CdrRecord(leg_id=uuid.uuid4(), call_id=uuid.uuid4(), direction="outbound", from_number="+33170000001",
                     to_number="+33612345678", started_at=started, answered_at=started + dt.timedelta(seconds=2),
                     ended_at=started + dt.timedelta(seconds=2 + seconds), disposition="ANSWERED", hangup_cause=16,
                     hangup_reason="normal", channel_id="c", account_id=str(account), user_id=str(user),
                     cost=Decimal(0), included=True, rating_prefix="33")


async def _insert_cdrs(db_: Any, records: list[CdrRecord]) -> None:
    await cdrs.ensure_partitions(db_, [r.started_at for r in records])
    await cdrs.insert_cdrs(db_, records)


async def _trial_account(pool: asyncpg.Pool, tmp_path: Path) -> uuid.UUID:
    path = tmp_path / "deck.csv"
    path.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,1,0.02,EUR\n")
    await store.import_deck(pool, "std", dt.datetime.now(dt.UTC) - dt.timedelta(days=1), str(path),
                            load_deck_file(path))
    account = uuid.uuid4()
    await pool.execute("INSERT INTO account (id, name, country, currency, plan, created_at) "
                       "VALUES ($1, 'Trial', 'FR', 'EUR', 'trial', now() - interval '1 day')", account)
    return account


async def test_parallel_calls_of_a_trial_user_on_two_engines_share_what_is_left_of_the_allowance(
        database_url: str, tmp_path: Path) -> None:
    engines = [await asyncpg.create_pool(database_url, min_size=1, max_size=4) for _ in range(2)]
    try:
        account = await _trial_account(engines[0], tmp_path)
        user = uuid.uuid4()
        await _insert_cdrs(engines[0], [_used_cdr(account, user, ALLOWANCE_S - 50)])  # 50 s left
        at = dt.datetime.now(dt.UTC)
        auths = await asyncio.gather(*(
            service.authorize(pool, account, "+33170000001", "+33612345678", at, user_id=user,
                              channel_id=f"call-{i}", asterisk_id=f"node{i % 2}")
            for i in range(6) for pool in engines))
        allowed = [a for a in auths if a.allowed]
        # The first call holds the 50 s; the others find nothing left (and no credit to pay beyond it).
        assert [a.max_seconds for a in allowed] == [50], [(a.max_seconds, a.reason) for a in auths]
        assert await store.included_seconds_used(engines[1], account, user, at - dt.timedelta(days=1)) == ALLOWANCE_S
        # It talks 20 s: the next call gets the 30 s left at once (before that call's CDR is written).
        assert allowed[0].reservation_id is not None
        assert await service.settle(engines[0], allowed[0].reservation_id, 20) == 0
        again = await service.authorize(engines[1], account, "+33170000001", "+33612345678", at, user_id=user,
                                        channel_id="call-again")
        assert again.allowed and again.max_seconds == 30 and again.reservation_id is not None
        # That engine dies; its call ended after 12 s: the sweep settles its hold like a credit hold.
        sweep = await service.settle_abandoned(engines[0], live=set(), known_s={"call-again": 12})
        assert [(s.channel_id, s.seconds, s.source, s.cost) for s in sweep.settled] == [("call-again", 12, "engine", 0)]
        assert await store.included_seconds_used(engines[0], account, user,
                                                 at - dt.timedelta(days=1)) == ALLOWANCE_S - 50 + 20 + 12
        # No money moved for included seconds.
        assert await engines[0].fetchval("SELECT count(*) FROM credit_ledger WHERE account_id = $1", account) == 0
    finally:
        for pool in engines:
            await pool.close()


def trial_user(database_url: str, tmp_path: Path, used_s: int) -> dict[str, Any]:
    """A trial account (France included, zone 1) with one SIP user who already used ``used_s`` seconds."""
    acc = cli(database_url, "account", "create", "--name", "Trial", "--country", "FR", "--plan", "trial",
              "--extra-channels", "1")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice",
               "--number", f"+3317100{next(_DIDS):04d}")
    user["account_id"] = acc["id"]
    # Opened yesterday: the call that used the seconds (an hour ago) is in its trial.
    db(database_url, "UPDATE account SET created_at = now() - interval '1 day' WHERE id = $1::uuid", acc["id"])
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,1,0.60,EUR\n")
    assert run_cli(database_url, "rates", "import", str(deck), "--deck", "trial").returncode == 0

    async def used() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await _insert_cdrs(conn, [_used_cdr(acc["id"], user["id"], used_s)])
        finally:
            await conn.close()

    asyncio.run(used())
    return user


def test_a_trial_users_calls_on_two_nodes_at_once_never_exceed_the_allowance(
        two_nodes: list[Node], nodes_database_url: str, tmp_path: Path) -> None:  # noqa: F811
    database_url = nodes_database_url
    user = trial_user(database_url, tmp_path, ALLOWANCE_S - 6)  # 6 s left; two channels, one call per node
    with far_ends(two_nodes, calls=1):
        place_calls(two_nodes, user, per_node=1, talk_ms=10000)
        # The used seconds' CDR, two calls, one leg through.
        rows = wait_for_account_cdrs(database_url, user["account_id"], 1 + 2 + 1)

    def inbound_done() -> list[dict[str, Any]] | None:
        found = db(database_url, "SELECT extra FROM cdr WHERE account_id = $1 AND direction = 'inbound'",
                   user["account_id"])
        return found if len(found) == 2 else None

    outcomes = sorted(json.loads(r["extra"])["outcome"] for r in wait_for(inbound_done, 30, "both calls' CDRs"))
    assert outcomes.count("not_authorised") == 1, outcomes  # the other was cut by Asterisk at its limit
    legs = [r for r in rows if r["direction"] == "outbound" and r["disposition"] == "ANSWERED"
            and r["channel_id"] != "c"]  # not the call that used the seconds before
    assert len(legs) == 1 and legs[0]["included"] and legs[0]["cost"] == 0
    # Cut by Asterisk at the 6 s held (the leg's seconds rounded up from the instant it was cut).
    assert legs[0]["billed_s"] <= 7, legs[0]["billed_s"]
    holds = db(database_url, "SELECT max_seconds, billed_s, settled_at FROM credit_reservation "
                             "WHERE user_id = $1::uuid AND kind = 'allowance'", user["id"])
    assert [(h["max_seconds"], h["settled_at"] is not None) for h in holds] == [(6, True)]
    assert holds[0]["billed_s"] <= 6
    assert db(database_url, "SELECT * FROM credit_ledger WHERE account_id = $1::uuid", user["account_id"]) == []
