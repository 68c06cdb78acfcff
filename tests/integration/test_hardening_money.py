"""Money on a real PostgreSQL and through the CLI as a process (issue 15 items 1-5): a deck row in
another currency, premium rows in an included zone, rates more precise than the store, one answer for
`callctl rate` and the engine, a statement that never fails as a whole, money printed at its scale."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.billing import service
from callctl.billing.decks import load_deck_file
from callctl.cdr.record import CdrRecord
from callctl.store import billing as store
from callctl.store import cdrs
from tests.integration.test_hardening_cli import run_cli

pytestmark = pytest.mark.integration

HEADER = "prefix,destination,zone,rate_per_minute,currency,per_call,increment_s,premium\n"
# UK landlines in zone 1 priced in GBP; a premium number in zone 1 flagged by the deck; another
# premium number flagged by its tariff only (a per-call charge, no premium column value).
DECK = (HEADER + "33,France,1,0.02,EUR,,,\n44,UK,1,0.03,GBP,,,\n3389,France premium,1,0.80,EUR,,,yes\n"
        "3368,France per call,1,0.10,EUR,0.50,60,\n1,USA,3,0.03,EUR,,,\n")
FROM = "+33123456789"
UK = "+442079460000"
AT = dt.datetime(2026, 3, 10, 10, 0, tzinfo=dt.UTC)


def _fetch(database_url: str, query: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


async def _setup(database_url: str, tmp_path: Path, plan: str) -> tuple[asyncpg.Pool, uuid.UUID]:
    path = tmp_path / "deck.csv"
    path.write_text(DECK)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await store.import_deck(pool, "std", AT - dt.timedelta(days=30), str(path), load_deck_file(path))
    account = uuid.uuid4()
    await pool.execute("INSERT INTO account (id, name, country, currency, plan) VALUES ($1, 'acme', 'FR', 'EUR', $2)",
                       account, plan)
    return pool, account


def _rate_cli(database_url: str, account: uuid.UUID, to: str, seconds: int = 60) -> dict[str, Any]:
    res = run_cli(database_url, "rate", "--account", str(account), "--from", FROM, "--to", to,
                  "--seconds", str(seconds), "--at", AT.isoformat())
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


async def test_an_included_call_to_a_row_in_another_currency_is_included_at_zero_in_the_accounts(
        database_url: str, tmp_path: Path) -> None:
    pool, account = await _setup(database_url, tmp_path, "unlimited")
    try:
        auth = await service.authorize(pool, account, FROM, UK, AT)
        assert auth.allowed and auth.reservation_id is None and auth.rating is not None
        assert (auth.rating.included, auth.rating.currency, auth.rating.cost) == (True, "EUR", D("0.0000"))
        assert service.cdr_rating(auth, None)["currency"] == "EUR"  # the CDR carries the account's currency
        shown = await asyncio.to_thread(_rate_cli, database_url, account, UK)
        assert (shown["included"], shown["currency"], shown["cost"]) == (True, "EUR", "0.0000")
        assert "refused" not in shown
    finally:
        await pool.close()


async def test_rate_and_the_engine_refuse_a_billed_call_to_a_row_in_another_currency_alike(
        database_url: str, tmp_path: Path) -> None:
    pool, account = await _setup(database_url, tmp_path, "payg")
    try:
        await store.add_credit(pool, account, "EUR", D("10"))
        auth = await service.authorize(pool, account, FROM, UK, AT)
        shown = await asyncio.to_thread(_rate_cli, database_url, account, UK)
        assert not auth.allowed and auth.reason is not None and "GBP" in auth.reason
        assert shown["refused"] == auth.reason
        assert shown["why"].startswith("refused: ")
        ok = await service.authorize(pool, account, FROM, "+33612345678", AT)
        assert ok.allowed and "refused" not in await asyncio.to_thread(_rate_cli, database_url, account,
                                                                        "+33612345678")
    finally:
        await pool.close()


@pytest.mark.parametrize("to", ["+33891234567", "+33681234567"])  # flagged by the deck / by its tariff
async def test_a_premium_number_in_an_included_zone_is_never_included(database_url: str, tmp_path: Path,
                                                                      to: str) -> None:
    pool, account = await _setup(database_url, tmp_path, "unlimited")
    try:
        (deck,) = await store.load_decks(pool, AT)
        rate = deck.match(to)
        assert rate is not None and rate.premium
        auth = await service.authorize(pool, account, FROM, to, AT)  # no credit: billed, so refused
        assert not auth.allowed and auth.rating is not None and not auth.rating.included
        shown = await asyncio.to_thread(_rate_cli, database_url, account, to)
        assert shown["included"] is False and D(shown["cost"]) > 0 and "premium-rate" in shown["why"]
    finally:
        await pool.close()


def test_a_rate_more_precise_than_the_store_is_refused_at_import_with_file_and_line(database_url: str,
                                                                                    tmp_path: Path) -> None:
    path = tmp_path / "precise.csv"
    path.write_text("prefix,destination,zone,rate_per_minute,currency,connect_fee\n"
                    "33,France,1,0.0123456,EUR,\n44,UK,1,0.0300000,GBP,\n49,Germany,1,0.02,EUR,0.0000001\n"
                    "32,Belgium,1,0.02,EUR,\n")
    res = run_cli(database_url, "rates", "import", str(path), "--deck", "std")
    assert res.returncode == 1 and res.stdout == ""
    assert f"{path}:2: rate_per_minute 0.0123456 has 7 decimals, at most 6 are kept" in res.stderr
    assert f"{path}:4: connect_fee 0.0000001 has 7 decimals" in res.stderr
    assert f"{path}:3:" not in res.stderr  # 0.0300000 is 0.03 exactly: kept
    assert _fetch(database_url, "SELECT count(*) FROM rate") == 0
    path.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,1,0.012345,EUR\n"
                    "44,UK,1,0.0300000,GBP\n")
    res = run_cli(database_url, "rates", "import", str(path), "--deck", "std")
    assert res.returncode == 0, res.stderr
    assert _fetch(database_url, "SELECT rate_per_minute FROM rate WHERE prefix = '33'") == D("0.012345")


def _cdr(account: uuid.UUID, to: str, hours: int, seconds: int, **rating: Any) -> CdrRecord:
    started = dt.datetime(2026, 3, 1, tzinfo=dt.UTC) + dt.timedelta(hours=hours)
    return CdrRecord(leg_id=uuid.uuid4(), call_id=uuid.uuid4(), direction="outbound", from_number=FROM,
                     to_number=to, started_at=started, answered_at=started + dt.timedelta(seconds=2),
                     ended_at=started + dt.timedelta(seconds=2 + seconds), disposition="ANSWERED",
                     hangup_cause=16, hangup_reason="normal", channel_id="c", account_id=str(account), **rating)


async def test_bill_reports_a_line_it_cannot_bill_and_still_produces_the_statement(database_url: str,
                                                                                  tmp_path: Path) -> None:
    pool, account = await _setup(database_url, tmp_path, "unlimited")
    try:
        # As engines before the fix wrote them: an included call to the GBP row, its CDR in GBP; and a
        # call charged in GBP (an account that paid in GBP then). Plus ordinary calls.
        included_gbp = _cdr(account, UK, 1, 60, rating_deck="std", rating_prefix="44", cost=D(0), currency="GBP",
                            included=True)
        charged_gbp = _cdr(account, UK, 2, 60, rating_deck="std", rating_prefix="44", cost=D("0.0300"),
                           currency="GBP", included=False)
        usa = _cdr(account, "+12025550143", 3, 61)
        nowhere = _cdr(account, "+99912345678", 4, 30)  # no row: unrated
        records = [included_gbp, charged_gbp, usa, nowhere]
        await cdrs.ensure_partitions(pool, [r.started_at for r in records])
        await cdrs.insert_cdrs(pool, [dataclasses.replace(r) for r in records])
    finally:
        await pool.close()
    out_csv = tmp_path / "bill.csv"
    res = await asyncio.to_thread(run_cli, database_url, "bill", "--account", str(account), "--month", "2026-03",
                                  "--csv", str(out_csv))
    assert res.returncode == 1, res.stderr  # the statement is there, something needs attention
    assert "Total excl. VAT" in res.stdout and "USA" in res.stdout and "UK" in res.stdout
    assert "Needs attention: 2 call(s)" in res.stdout
    assert str(charged_gbp.leg_id) in res.stdout and str(nowhere.leg_id) in res.stdout
    assert str(included_gbp.leg_id) not in res.stdout.split("Needs attention")[1]  # included: a line, at 0
    assert "need attention" in res.stderr
    rows = list(csv.reader(out_csv.read_text().splitlines()))
    assert any(r[0].startswith("needs attention") and r[-1] == str(charged_gbp.leg_id) for r in rows)


def test_money_in_json_has_its_scale(database_url: str) -> None:
    account = uuid.uuid4()

    async def create() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("INSERT INTO account (id, name, country, currency) VALUES ($1, 'a', 'FR', 'EUR')",
                               account)
        finally:
            await conn.close()

    asyncio.run(create())
    credit = json.loads(run_cli(database_url, "credit", "show", "--account", str(account)).stdout)
    assert (credit["balance"], credit["reserved"], credit["available"]) == ("0.0000", "0.0000", "0.0000")
    added = json.loads(run_cli(database_url, "credit", "add", "--account", str(account), "5").stdout)
    assert added["balance"] == "5.0000"
    unrated = json.loads(run_cli(database_url, "rate", "--account", str(account), "--from", FROM, "--to", UK,
                                 "--seconds", "60").stdout)
    assert unrated["cost"] == "0.0000" and "refused" in unrated  # no deck at all
    report = json.loads(run_cli(database_url, "compliance", "report", "--account", str(account), "--month",
                                "2026-03").stdout)
    assert report["penalty_eur"] == "0.00"
