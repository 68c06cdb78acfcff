"""The FastAGI gate's cache of per-account facts on a real PostgreSQL (issue 17): a change through the
CLI is seen by the next decision (PostgreSQL notifies it), and a cache that cannot hear notifications
(its listener connection dropped) reads PostgreSQL instead of serving what it had."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import callctl.conference.steps  # noqa: F401  (registers the conference step type)
from callctl.agi.gate import gate_handler
from callctl.agi.server import AgiServer
from callctl.flows.loader import load_dialplan
from callctl.fraud.service import FraudService
from callctl.store.facts import LISTENER_APP_NAME, AccountFactsCache
from tests.integration.test_lines_cli import cli

pytestmark = pytest.mark.integration

COUNTRIES = load_dialplan(Path(__file__).resolve().parents[2] / "dialplan").countries
CALLER = "+33123456789"
UK_NUMBER = "+442071838750"  # a London landline: zone europe from a French account


async def _session(port: int, account: uuid.UUID, extension: str) -> dict[str, str]:
    """Asterisk's side of one FastAGI session."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    variables: dict[str, str] = {}
    writer.write((f"agi_network: yes\nagi_network_script: gate?account={account}\n"
                  f"agi_uniqueid: {uuid.uuid4()}\nagi_callerid: {CALLER}\nagi_extension: {extension}\n\n").encode())
    while line := await asyncio.wait_for(reader.readline(), 5):
        name, _, value = line.decode().removeprefix("SET VARIABLE ").strip().partition(" ")
        variables[name] = value.strip('"')
        writer.write(b"200 result=1\n")
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return variables


@contextlib.asynccontextmanager
async def _gate(database_url: str) -> AsyncIterator[tuple[AgiServer, AccountFactsCache, asyncpg.Pool]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        async with AccountFactsCache(database_url, retry_max_s=0.2) as cache, \
                AgiServer("127.0.0.1", 0, gate_handler(pool, COUNTRIES, fraud=FraudService(pool), facts=cache)) as srv:
            assert await cache.wait_for_listening(10)
            yield srv, cache, pool
    finally:
        await pool.close()


async def _cli(database_url: str, *args: str) -> dict[str, object]:
    return await asyncio.to_thread(cli, database_url, *args)  # the loop keeps running (notifications arrive)


async def test_a_permission_change_through_the_cli_is_seen_by_the_next_gate_decision(database_url: str) -> None:
    account = uuid.UUID(str((await _cli(database_url, "account", "create", "--name", "Acme", "--country", "FR"))["id"]))
    async with _gate(database_url) as (srv, cache, _pool):
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "allow"
        hits = cache.hits
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "allow"
        assert cache.hits == hits + 1  # served from the cache
        await _cli(database_url, "fraud", "permissions", str(account), "--zones", "domestic")
        refused = await _session(srv.port, account, UK_NUMBER)
        assert refused["CALLCTL_GATE"] == "deny", refused
        assert refused["CALLCTL_GATE_DISPOSITION"] == "FRAUD_DESTINATION_ZONE_BARRED"
        await _cli(database_url, "fraud", "permissions", str(account), "--zones", "domestic,europe,world")
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "allow"


async def test_when_the_listener_connection_drops_the_cache_reads_postgresql(database_url: str) -> None:
    account = uuid.UUID(str((await _cli(database_url, "account", "create", "--name", "Acme", "--country", "FR"))["id"]))

    async def silently_bar_europe(pool: asyncpg.Pool) -> None:
        """A change no trigger notifies (replica mode skips triggers): only a read of PostgreSQL sees it."""
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("INSERT INTO fraud_permission (account_id, scope, permissions) VALUES "
                               "($1, 'account', '{\"zones\": [\"domestic\"]}') ON CONFLICT (account_id, scope) DO "
                               "UPDATE SET permissions = EXCLUDED.permissions", account)

    async with _gate(database_url) as (srv, cache, pool):
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "allow"
        await silently_bar_europe(pool)
        # Listening, the cache serves what it read: the silent change is not seen (the control).
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "allow"
        killed = await pool.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE application_name = $1", LISTENER_APP_NAME)
        assert killed == 1
        assert await cache.wait_for_not_listening(5)
        # Off (or back, starting empty): either way the decision reads PostgreSQL.
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "deny"
        assert await cache.wait_for_listening(10)  # it comes back by itself
        assert (await _session(srv.port, account, UK_NUMBER))["CALLCTL_GATE"] == "deny"
