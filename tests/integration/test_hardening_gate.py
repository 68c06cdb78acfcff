"""The gate on a real PostgreSQL against hostile numbers (issue 15 items 7, 8): look-alikes of E.164
are invalid numbers, and text PostgreSQL cannot store never stops a decision (an emergency one above all)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

import callctl.conference.steps  # noqa: F401  (registers the conference step type)
from callctl.agi.gate import gate_handler
from callctl.agi.server import AgiServer
from callctl.cdr.writer import CdrWriter
from callctl.flows.loader import load_dialplan
from callctl.gating.service import decide
from callctl.store import cdrs
from callctl.store import gating as store

pytestmark = pytest.mark.integration

COUNTRIES = load_dialplan(Path(__file__).resolve().parents[2] / "dialplan").countries
AT = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC)
CALLER = "+33123456789"
GARBAGE = ("+33\x00123", "\udcff\udcfe", "\x00", "12\ud800")


async def _account(pool: asyncpg.Pool, *, emergency: bool = False) -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute("INSERT INTO account (id, name, country, currency) VALUES ($1, 'acme', 'FR', 'EUR')",
                       account_id)
    if emergency:
        await store.set_emergency(pool, account_id, enabled=True, location="1 rue de Rivoli, Paris", verified=True)
    return account_id


@pytest.mark.parametrize("dialled", ["+", "+abc", "+15", "+33abc", "+1800FLOWERS", "++33123456789", "+0123456"])
async def test_a_plus_followed_by_nothing_valid_is_an_invalid_number(database_url: str, dialled: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool)
        for automated in (False, True):
            d = await decide(pool, COUNTRIES, acc, CALLER, dialled, AT, account_country="FR", automated=automated)
            assert (d.decision, d.rule, d.route) == ("deny", "number_invalid", None), (dialled, automated)
        assert [r["rule"] for r in await store.decisions(pool, acc)] == ["number_invalid"] * 2


async def test_a_valid_number_in_any_spelling_is_still_allowed(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool)
        for dialled in ("+33 1 23 45 67 89", "01 23 45 67 89", "(01) 23-45-67-89", "+442071234567"):
            d = await decide(pool, COUNTRIES, acc, CALLER, dialled, AT, account_country="FR", automated=False)
            assert (d.decision, d.route) == ("allow", "pstn"), dialled


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_in_the_caller_field_never_stops_an_allowed_emergency_call(database_url: str,
                                                                                garbage: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool, emergency=True)
        d = await decide(pool, COUNTRIES, acc, garbage, "112", AT, account_country="FR", automated=False)
        assert (d.decision, d.route, d.location) == ("allow", "emergency", "1 rue de Rivoli, Paris")
        (row,) = await store.decisions(pool, acc)
        assert row["rule"] == "emergency_allowed" and "\x00" not in row["caller"]
        # An automated account too: the caller goes through the dialer rules' record.
        dialer = await decide(pool, COUNTRIES, acc, garbage, "0612345678", AT, account_country="FR", automated=True)
        assert dialer.rule in ("compliant", "mobile_caller_id")


@pytest.mark.parametrize("garbage", GARBAGE)
async def test_garbage_in_the_dialled_number_is_an_invalid_number_recorded(database_url: str, garbage: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool)
        d = await decide(pool, COUNTRIES, acc, CALLER, garbage, AT, account_country="FR", automated=False)
        assert (d.decision, d.rule) == ("deny", "number_invalid")
        (row,) = await store.decisions(pool, acc)
        assert row["rule"] == "number_invalid" and "\x00" not in row["callee"]


async def _agi(port: int, account: uuid.UUID, extension: bytes, callerid: bytes,
               uniqueid: bytes = b"1700000000.1") -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\nagi_network_script: gate?account=" + str(account).encode() +
                 b"\nagi_uniqueid: " + uniqueid + b"\nagi_channel: PJSIP/x-00000001\nagi_callerid: " + callerid +
                 b"\nagi_extension: " + extension + b"\n\n")
    variables = {}
    while line := await reader.readline():
        name, _, value = line.decode().removeprefix("SET VARIABLE ").strip().partition(" ")
        variables[name] = value.strip('"')
        writer.write(b"200 result=1\n")
    writer.close()
    return variables


async def test_the_fastagi_gate_routes_an_emergency_call_whatever_bytes_the_caller_field_holds(
        database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool, emergency=True)
        async with AgiServer("127.0.0.1", 0, gate_handler(pool, COUNTRIES)) as srv:
            routed = await asyncio.wait_for(_agi(srv.port, acc, b"112", b"\x00\xff\xfe<sip:\x00@x>"), 10)
            invalid = await asyncio.wait_for(_agi(srv.port, acc, b"+abc", b"+33123456789"), 10)
        assert (routed["CALLCTL_GATE"], routed["CALLCTL_GATE_ROUTE"]) == ("allow", "emergency")
        assert routed["CALLCTL_GATE_LOCATION"] == "1 rue de Rivoli, Paris"
        assert (invalid["CALLCTL_GATE"], invalid["CALLCTL_GATE_RULE"]) == ("deny", "number_invalid")


async def test_a_call_the_operators_dialplan_sends_through_the_gate_gets_one_cdr(database_url: str,
                                                                              tmp_path: Path) -> None:
    """Issue 15 item 19: the decision leaves a CDR on the calling channel, through the CDR writer, once
    per channel however many times the channel asks (a dialplan loop, a retry)."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool, emergency=True)
        async with CdrWriter(database_url, tmp_path / "spool", store_factory=cdrs.PgCdrStore) as writer:
            async with AgiServer("127.0.0.1", 0, gate_handler(pool, COUNTRIES, submit=writer.submit)) as srv:
                allowed = await asyncio.wait_for(_agi(srv.port, acc, b"0612345678", b"0123456789",
                                                      b"1700000000.7"), 10)
                again = await asyncio.wait_for(_agi(srv.port, acc, b"0612345678", b"0123456789",
                                                    b"1700000000.7"), 10)
                refused = await asyncio.wait_for(_agi(srv.port, acc, b"+abc", b"0123456789", b"1700000000.8"), 10)
                routed = await asyncio.wait_for(_agi(srv.port, acc, b"112", b"\x00", b"1700000000.9"), 10)
            assert await writer.wait_for_drained(10)
        assert (allowed["CALLCTL_GATE"], again["CALLCTL_GATE"], refused["CALLCTL_GATE"]) == ("allow", "allow", "deny")
        assert routed["CALLCTL_GATE_ROUTE"] == "emergency"
        rows = {r["channel_id"]: r for r in await pool.fetch(
            "SELECT channel_id, direction, from_number, to_number, disposition, account_id, cost, included, "
            "extra FROM cdr WHERE account_id = $1", str(acc))}
    assert set(rows) == {"1700000000.7", "1700000000.8", "1700000000.9"}  # the second ask: no second CDR
    first = rows["1700000000.7"]
    assert (first["direction"], first["disposition"], first["from_number"], first["to_number"]) == \
        ("inbound", "GATE_ALLOWED", "+33123456789", "+33612345678")
    assert json.loads(first["extra"])["rule"] == "not_gated"
    assert rows["1700000000.8"]["disposition"] == "GATE_REFUSED"
    assert json.loads(rows["1700000000.8"]["extra"])["rule"] == "number_invalid"
    assert (rows["1700000000.9"]["cost"], rows["1700000000.9"]["included"]) == (0, True)  # emergency: free
