"""Fraud counters and commands on a real PostgreSQL: calls per minute, international calls in progress
(until the hold is settled or the CDR written), concurrent admissions, and every bad input of
`callctl fraud` refused with one line."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import asyncpg
import pytest

from callctl.fraud.rules import FraudPolicy, Limits
from callctl.fraud.service import FraudService
from tests.integration.test_lines_cli import cli, run_cli

pytestmark = pytest.mark.integration


async def _account(pool: asyncpg.Pool, country: str = "FR") -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute("INSERT INTO account (id, name, country, currency) VALUES ($1, 'acme', $2, 'EUR')",
                       account_id, country)
    return account_id


def _policy(**limits: object) -> FraudPolicy:
    return FraudPolicy(Limits().changed(**limits))


async def test_international_calls_count_until_their_cdr_is_written_and_domestic_ones_never(
        database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        fraud = FraudService(pool, _policy(international_calls=2))

        async def call(number: str, channel: str) -> str | None:
            refusal = await fraud.admit(acc, None, number, channel_id=channel, reservation_id=None, path="line")
            return None if refusal is None else refusal.rule

        assert await call("+442079460000", "ch-1") is None
        assert await call("+33123456789", "ch-2") is None  # domestic: not counted
        assert await call("+12125551234", "ch-3") is None
        assert await call("+33123456780", "ch-4") is None  # domestic calls still pass at the limit
        assert await pool.fetchval("SELECT count(*) FROM fraud_hold") == 0
        # The first international call ends (its CDR is written): one more fits.
        now = dt.datetime.now(dt.UTC)
        await pool.execute("INSERT INTO cdr (leg_id, call_id, direction, from_number, to_number, started_at, ended_at, "
                           "billed_s, disposition, hangup_reason, channel_id, account_id) VALUES ($1, $1, 'inbound', "
                           "'', '', $2, $2, 0, 'ANSWERED', 'normal', 'ch-1', $3)", uuid.uuid4(), now, str(acc))
        assert await call("+4930123456", "ch-5") is None
        assert await call("+390612345678", "ch-6") == "international_calls_limit"  # and the account is suspended
        assert await call("+33123456781", "ch-7") == "outbound_suspended"
        rules = [r["rule"] for r in await pool.fetch("SELECT rule FROM fraud_refusal ORDER BY id")]
        assert rules == ["international_calls_limit", "outbound_suspended"]


async def test_parallel_admissions_never_pass_more_calls_per_minute_than_the_limit(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=10, max_size=10) as pool:
        acc = await _account(pool)
        fraud = FraudService(pool, _policy(calls_per_minute=4))
        results = await asyncio.gather(*(fraud.admit(acc, None, "+33123456789", channel_id=f"ch-{n}",
                                                     reservation_id=None, path="line") for n in range(12)))
        assert sum(r is None for r in results) == 4
        assert {r.rule for r in results if r is not None} == {"calls_per_minute_limit", "outbound_suspended"}
        assert await pool.fetchval("SELECT count(*) FROM fraud_admission") == 4
        assert await pool.fetchval("SELECT count(*) FROM fraud_hold WHERE released_at IS NULL") == 1


async def test_settled_holds_count_at_their_cost_and_open_ones_at_their_amount(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        fraud = FraudService(pool, _policy(hour=Decimal(10)))
        settled, open_ = uuid.uuid4(), uuid.uuid4()
        await pool.execute("INSERT INTO credit_reservation (id, account_id, amount, max_seconds, rate, settled_at, "
                           "cost) VALUES ($1, $2, 8, 60, '{}', now(), 3)", settled, acc)
        await pool.execute("INSERT INTO credit_reservation (id, account_id, amount, max_seconds, rate) "
                           "VALUES ($1, $2, 6.5, 60, '{}')", open_, acc)
        assert await fraud.admit(acc, None, "+33123456789", channel_id="a", reservation_id=open_, path="line") is None
        # 3 spent + 6.50 held = 9.50: under 10, one more call is admitted (its own hold is not counted) ...
        third = uuid.uuid4()
        await pool.execute("INSERT INTO credit_reservation (id, account_id, amount, max_seconds, rate) "
                           "VALUES ($1, $2, 6.5, 60, '{}')", third, acc)
        assert await fraud.admit(acc, None, "+33123456789", channel_id="b", reservation_id=third, path="line") is None
        refusal = await fraud.admit(acc, None, "+33123456789", channel_id="c", reservation_id=None, path="line")
        assert refusal is not None and refusal.rule == "spend_hour_limit" and "16.0000 EUR" in refusal.reason


@pytest.mark.parametrize(("args", "message"), [
    (["permissions", "{acc}", "--countries", "FR,XX"], "--countries: 'XX' is not an ISO 3166 alpha-2 country"),
    (["permissions", "{acc}", "--zones", "mars"], "--zones: unknown zone 'mars'"),
    (["permissions", "{acc}"], "nothing to change"),
    (["permissions", "{other}", "--premium"], "no account {other}"),
    (["permissions", "{acc}", "--user", "{other}", "--premium"], "no user {other} in account {acc}"),
    (["limits", "{acc}", "--hour", "ten"], "limit 'hour': 'ten' is not an amount"),
    (["limits", "{acc}", "--calls-per-minute", "0"], "limit 'calls_per_minute': 0 must be between 1 and 100000"),
    (["limits", "{acc}", "--contact", "not-an-address"], "--contact 'not-an-address' is not an e-mail address"),
    (["unblock", "203.0.113.999"], "'203.0.113.999' is not an IP address"),
    (["show", "{other}"], "no account {other}"),
    (["encryption", "{other}", "--require"], "no user {other}"),
])
def test_bad_fraud_commands_fail_with_one_line_naming_the_problem(database_url: str, args: list[str],
                                                                   message: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")["id"]
    other = str(uuid.uuid4())
    res = run_cli(database_url, "fraud", *[a.format(acc=acc, other=other) for a in args])
    assert res.returncode == 2, res.stdout
    assert res.stderr.count("\n") == 1 and message.format(acc=acc, other=other) in res.stderr, res.stderr


def test_release_and_unblock_of_nothing_exit_1(database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")["id"]
    released = run_cli(database_url, "fraud", "release", acc)
    assert released.returncode == 1 and "is not suspended" in released.stderr
    unblocked = run_cli(database_url, "fraud", "unblock", "203.0.113.7")
    assert unblocked.returncode == 1 and "203.0.113.7 is not blocked" in unblocked.stderr


def test_a_users_own_permissions_replace_the_accounts_for_that_user_only(database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")["id"]
    boss = cli(database_url, "user", "add", "--account", acc, "--name", "Boss")["id"]
    clerk = cli(database_url, "user", "add", "--account", acc, "--name", "Clerk")["id"]
    cli(database_url, "fraud", "permissions", acc, "--zones", "domestic,europe", "--by", "ops")
    own = cli(database_url, "fraud", "permissions", acc, "--user", boss, "--zones", "domestic,europe,world", "--by",
              "ops")
    assert own["before"]["zones"] == ["domestic", "europe"]  # the user's set starts from the account's

    async def check(user: str) -> str | None:
        async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
            refusal = await FraudService(pool).permission(uuid.UUID(acc), uuid.UUID(user), "FR", "+12125551234", "line")
        return None if refusal is None else refusal.rule

    assert asyncio.run(check(boss)) is None
    assert asyncio.run(check(clerk)) == "destination_zone_barred"
    shown = cli(database_url, "fraud", "show", acc)
    assert shown["permissions"]["zones"] == ["domestic", "europe"] and boss in shown["user_permissions"]
    assert [a["scope"] for a in shown["audit"]] == [boss, "account"]
