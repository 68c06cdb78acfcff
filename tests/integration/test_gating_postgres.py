"""Gating on a real PostgreSQL: per-callee cap under races, opposition list at scale, decision records."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import asyncpg
import pytest

import callctl.conference.steps  # noqa: F401  (registers the conference step type)
from callctl.billing.service import Authorization
from callctl.flows.loader import load_dialplan
from callctl.gating import optout
from callctl.gating.originate import Dialer
from callctl.gating.service import decide
from callctl.store import gating as store

pytestmark = pytest.mark.integration

PLAN = load_dialplan(Path(__file__).resolve().parents[2] / "dialplan")
COUNTRIES = PLAN.countries
AT = dt.datetime(2025, 3, 4, 10, 30, tzinfo=dt.UTC)  # a Tuesday, 11:30 in Paris
CALLER = "+33123456789"


async def _account(pool: asyncpg.Pool, country: str = "FR") -> uuid.UUID:
    account_id = uuid.uuid4()
    await pool.execute("INSERT INTO account (id, name, country, currency) VALUES ($1, 'acme', $2, 'EUR')",
                       account_id, country)
    return account_id


async def test_fifth_call_in_thirty_days_is_refused_and_recorded(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool)
        results = [await decide(pool, COUNTRIES, acc, CALLER, "0612345678", AT + dt.timedelta(days=i),  # weekdays only
                                account_country="FR", automated=True) for i in (0, 1, 2, 3, 7)]
        assert [d.decision for d in results] == ["allow"] * 4 + ["deny"]
        assert results[4].rule == "callee_cap"
        later = await decide(pool, COUNTRIES, acc, CALLER, "0612345678", AT + dt.timedelta(days=31),
                             account_country="FR", automated=True)
        assert later.decision == "allow"  # the first call left the rolling window
        rows = await store.decisions(pool, acc)
        assert [(r["decision"], r["rule"], r["illegitimate"]) for r in rows][4] == ("deny", "callee_cap", True)


async def test_parallel_dialers_never_place_a_fifth_call(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=10, max_size=10) as pool:
        acc = await _account(pool)
        results = await asyncio.gather(*(decide(pool, COUNTRIES, acc, CALLER, "+33612345678", AT,
                                                account_country="FR", automated=True) for _ in range(10)))
        assert sum(d.allowed for d in results) == 4
        assert {d.rule for d in results if not d.allowed} == {"callee_cap"}


async def test_refusals_leave_a_decision_record(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool)
        night = dt.datetime(2025, 3, 4, 22, 0, tzinfo=dt.UTC)
        d1 = await decide(pool, COUNTRIES, acc, CALLER, "0612345678", night, account_country="FR", automated=True)
        d2 = await decide(pool, COUNTRIES, acc, "+33612345678", "0612345679", AT, account_country="FR",
                          automated=True)
        d3 = await decide(pool, COUNTRIES, acc, CALLER, "15", AT, account_country="FR", automated=False)
        assert (d1.rule, d2.rule, d3.rule) == ("canvassing_hours", "mobile_caller_id", "emergency_not_enabled")
        assert d3.emergency and d3.route is None and d3.language == "fr"  # announced in the line's language
        rows = await store.decisions(pool, acc)
        assert [r["rule"] for r in rows] == ["canvassing_hours", "mobile_caller_id", "emergency_not_enabled"]
        manual = await decide(pool, COUNTRIES, acc, CALLER, "0612345678", AT, account_country="FR", automated=False)
        assert manual.allowed and manual.route == "pstn"


async def test_allowed_emergency_call_carries_the_location(database_url: str) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        acc = await _account(pool, "GB")
        await store.set_emergency(pool, acc, enabled=True, location="10 Downing St, London", verified=True)
        d = await decide(pool, COUNTRIES, acc, "+442071234567", "999", AT, account_country="GB", automated=True)
        assert (d.decision, d.route, d.location) == ("allow", "emergency", "10 Downing St, London")
        fr15 = await decide(pool, COUNTRIES, acc, "+442071234567", "15", AT, account_country="GB", automated=False)
        assert not fr15.emergency
        await store.set_emergency(pool, acc, enabled=True, location="elsewhere", verified=False)
        d = await decide(pool, COUNTRIES, acc, "+442071234567", "112", AT, account_country="GB", automated=False)
        assert d.rule == "emergency_location_unverified"


async def test_optout_import_of_a_million_lines_switches_atomically(database_url: str, tmp_path: Path) -> None:
    first = tmp_path / "bloctel1.txt"
    first.write_text("".join(f"06{i:08d}\n" for i in range(1_000_000)))
    second = tmp_path / "bloctel2.txt"
    second.write_text("+33799999999\n0612345678\nnot a number\n")
    customers = tmp_path / "customers.txt"
    customers.write_text("0612345678\n")
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        seen: list[int] = []
        out = await optout.import_list(pool, first, progress=lambda done, lines: seen.append(lines))
        assert (out["numbers"], out["rejected"]) == (1_000_000, 0) and seen[-1] == 1_000_000
        assert await store.optout_lookup(pool, "+33600000042") == (out["version"], True)
        assert await store.optout_lookup(pool, "+33612345678") == (out["version"], False)
        refused = await decide(pool, COUNTRIES, acc, CALLER, "0600000042", AT, account_country="FR",
                               automated=True)
        assert (refused.rule, refused.list_version) == ("optout_listed", out["version"])

        # Lookups during the second import see the first list, then the second, never a mix or nothing.
        stop = asyncio.Event()
        observed: set[tuple[int | None, bool]] = set()

        async def probe() -> None:
            while not stop.is_set():
                observed.add(await store.optout_lookup(pool, "+33600000042"))
                await asyncio.sleep(0)

        prober = asyncio.create_task(probe())
        out2 = await optout.import_list(pool, second, progress=lambda d, n: None)
        stop.set()
        await prober
        assert observed <= {(out["version"], True), (out2["version"], False)}
        assert (out2["numbers"], out2["rejected"]) == (2, 1)
        assert await store.optout_lookup(pool, "+33799999999") == (out2["version"], True)
        parts = await pool.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'optout_number'::regclass")
        assert parts == 1

        listed = await decide(pool, COUNTRIES, acc, CALLER, "0612345678", AT, account_country="FR", automated=True)
        assert listed.rule == "optout_listed"
        await optout.import_exceptions(pool, acc, customers, "customer")
        ok = await decide(pool, COUNTRIES, acc, CALLER, "0612345678", AT, account_country="FR", automated=True)
        assert ok.allowed and ok.list_version == out2["version"]


class _Credit:
    """Prepaid billing whose credit is empty until ``paid`` (the rest is test_gating_asterisk's)."""

    def __init__(self) -> None:
        self.paid = False

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization:
        if not self.paid:
            return Authorization(0, None, None, "prepaid credit 0 EUR does not pay for 1 s: top up the account")
        return Authorization(60, uuid.uuid4(), None)

    async def finish(self, auth: Authorization, billed_seconds: int) -> dict[str, object]:
        return {}


async def test_an_originate_refused_for_credit_does_not_use_up_the_callees_four_calls(database_url: str) -> None:
    placed: list[str] = []

    async def originate(channel_id: str, endpoint: str, **_: object) -> None:
        placed.append(channel_id)

    credit = _Credit()
    async with asyncpg.create_pool(database_url, min_size=10, max_size=10) as pool:
        acc = await _account(pool)
        dialer = Dialer(pool, lambda: PLAN, originate, lambda: True, lambda: AT, billing=credit)
        body = {"account": str(acc), "from": "+33170000001", "to": "+33612345678", "flow": "welcome"}
        for _ in range(4):
            status, answer = await dialer.request(dict(body))
            assert status == 200 and (answer["decision"], answer["rule"], answer["originated"]) == \
                ("deny", "credit", False), answer
        credit.paid = True
        # Parallel dialers, once the account is topped up: still 4 calls, never a 5th.
        answers = await asyncio.gather(*(dialer.request(dict(body)) for _ in range(8)))
        assert sum(a["originated"] for _s, a in answers) == 4 == len(placed)
        assert {a["rule"] for _s, a in answers if not a["originated"]} == {"callee_cap"}
        rows = await store.decisions(pool, acc)
    by_rule = sorted((r["decision"], r["rule"], r["illegitimate"]) for r in rows)
    assert by_rule == [("allow", "compliant", False)] * 4 + [("deny", "callee_cap", True)] * 4 + \
        [("deny", "credit", False)] * 4
    assert all("top up" in r["reason"] for r in rows if r["rule"] == "credit")
