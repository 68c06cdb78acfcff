"""Free-minutes pools on a real PostgreSQL (issue 10): holds never overdraw a pool, even with two
conferences' legs racing on it; settling is idempotent; the statement adds up to the pool's ledger."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import random
import re
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from callctl.billing.minutes_cli import conference_statement
from callctl.cli import main
from callctl.store import conferences as conf_store
from callctl.store import minutes as store

pytestmark = pytest.mark.integration


async def _account(conn: asyncpg.Connection) -> uuid.UUID:
    account_id = uuid.uuid4()
    await conn.execute("INSERT INTO account (id, name, country, currency, plan) VALUES ($1, 'org', 'FR', 'EUR', "
                       "'payg')", account_id)
    return account_id


async def _conference(conn: asyncpg.Connection, subject: str) -> uuid.UUID:
    start = dt.datetime.now(dt.UTC)
    conf, _codes, _ = await conf_store.save_booking(conn, subject=subject, starts_at=start,
                                                    ends_at=start + dt.timedelta(hours=1), organizer="o@example.com",
                                                    participants=["p@example.com"], access_numbers=["+33800000102"])
    return conf.id


async def _leg(pool: asyncpg.Pool, account: uuid.UUID, conference: uuid.UUID, slice_s: int,
               rng: random.Random) -> int:
    """A leg that holds slice after slice until the pool says no, then uses all it held."""
    hold = await store.reserve(pool, account, slice_s, 5, conference_id=conference, leg_id=uuid.uuid4(),
                               access_number="+33800000102", person="p@example.com")
    if hold is None:
        return 0
    held = hold.held_s
    while True:
        await asyncio.sleep(rng.random() / 100)
        added = await store.extend(pool, hold.id, slice_s)
        if not added:
            break
        held += added
    return await store.settle(pool, hold.id, held + 5)  # asks for more than held: capped


async def test_two_conferences_racing_on_one_pool_drain_it_to_zero_and_never_below(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=8, max_size=8)
    try:
        async with pool.acquire() as conn:
            account = await _account(conn)
            confs = [await _conference(conn, "A"), await _conference(conn, "B")]
        await store.add(pool, account, 3600)
        rng = random.Random(10)
        used = await asyncio.gather(*(_leg(pool, account, confs[i % 2], 45, rng) for i in range(24)))
        assert sum(used) == 3600  # every second sold was drawn once: none lost, none drawn twice
        p = await store.pool(pool, account)
        assert p is not None and (p.balance_s, p.reserved_s) == (0, 0)
        moves = await store.ledger(pool, account)
        assert sum(int(m["seconds"]) for m in moves) == 0  # the ledger explains the balance
        by_conf = {u.conference_id: u.used_s for u in await store.usage(pool, account)}
        assert set(by_conf) == set(confs) and sum(by_conf.values()) == 3600
        # A new leg now finds nothing to hold.
        assert await store.reserve(pool, account, 45, 1, conference_id=confs[0], leg_id=uuid.uuid4(),
                                   access_number="+33800000102", person="x@example.com") is None
    finally:
        await pool.close()


async def test_a_leg_is_refused_below_the_minimum_and_settles_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        account = await _account(conn)
        conf = await _conference(conn, "Weekly")
        assert await store.reserve(conn, account, 60, 30, conference_id=conf, leg_id=uuid.uuid4(),
                                   access_number="+33800000102", person="p@example.com") is None  # no pool yet
        await store.add(conn, account, 100)
        first = await store.reserve(conn, account, 60, 30, conference_id=conf, leg_id=uuid.uuid4(),
                                    access_number="+33800000102", person="p@example.com")
        assert first is not None and first.held_s == 60
        assert await store.reserve(conn, account, 60, 41, conference_id=conf, leg_id=uuid.uuid4(),
                                   access_number="+33800000102", person="q@example.com") is None  # 40 s free
        second = await store.reserve(conn, account, 60, 40, conference_id=conf, leg_id=uuid.uuid4(),
                                     access_number="+33800000102", person="q@example.com")
        assert second is not None and second.held_s == 40  # what is left, not the whole slice
        assert await store.extend(conn, first.id, 60) == 0
        assert await store.settle(conn, first.id, 17) == 17
        assert await store.settle(conn, first.id, 50) == 17  # idempotent
        assert await store.extend(conn, first.id, 60) == 0  # a settled hold never grows again
        assert await store.extend(conn, second.id, 60) == 43  # the 43 s the first leg did not use
        p = await store.pool(conn, account)
        assert p is not None and (p.balance_s, p.reserved_s, p.available_s) == (83, 83, 0)
    finally:
        await conn.close()


async def test_abandoned_holds_are_settled_at_their_full_hold(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        account = await _account(conn)
        conf = await _conference(conn, "Weekly")
        await store.add(conn, account, 600)
        old = await store.reserve(conn, account, 100, 1, conference_id=conf, leg_id=uuid.uuid4(),
                                  access_number="+33800000102", person="p@example.com")
        live = await store.reserve(conn, account, 100, 1, conference_id=conf, leg_id=uuid.uuid4(),
                                   access_number="+33800000102", person="q@example.com")
        assert old is not None and live is not None
        await conn.execute("UPDATE minutes_hold SET created_at = now() - interval '10 minutes' WHERE id = $1", old.id)
        assert await store.settle_expired(conn, 120) == 1
        p = await store.pool(conn, account)
        assert p is not None and (p.balance_s, p.reserved_s) == (500, 100)
    finally:
        await conn.close()


async def test_statement_lines_add_up_to_the_pools_movements(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    conn = await asyncpg.connect(database_url)
    try:
        account = await _account(conn)
        confs = {"Board": await _conference(conn, "Board"), "Sales": await _conference(conn, "Sales")}
    finally:
        await conn.close()
    assert await asyncio.to_thread(main, ["minutes", "add", "--account", str(account), "30"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert (added["balance_s"], added["available_s"]) == (1800, 1800)
    conn = await asyncpg.connect(database_url)
    try:
        for subject, seconds in (("Board", 61), ("Sales", 300), ("Board", 1), ("Sales", 59)):
            hold = await store.reserve(conn, account, 400, 1, conference_id=confs[subject], leg_id=uuid.uuid4(),
                                       access_number="+33800000102", person="p@example.com")
            assert hold is not None
            await store.settle(conn, hold.id, seconds)
        now = dt.datetime.now(dt.UTC)
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        st = await conference_statement(conn, account, start, start + dt.timedelta(days=32))
        moves = await store.ledger(conn, account, start, start + dt.timedelta(days=32))
    finally:
        await conn.close()
    assert [(line.subject, line.legs, line.seconds) for line in st.lines] == [("Board", 2, 62), ("Sales", 2, 359)]
    assert st.used_s == -sum(int(m["seconds"]) for m in moves if m["kind"] == "leg") == 421
    assert st.purchased_s == 1800 and st.balance_s == 1800 - 421
    assert str(st.lines[0].minutes) == "1.03"

    assert await asyncio.to_thread(main, ["minutes", "show", "--account", str(account)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["balance_s"] == 1379 and shown["held_s"] == 0
    assert [(u["subject"], u["legs"], u["used_s"]) for u in shown["used_by"]] == [("Board", 2, 62), ("Sales", 2, 359)]
    assert [m["seconds"] for m in shown["movements"]] == [1800, -61, -300, -1, -59]

    assert await asyncio.to_thread(main, ["bill", "--account", str(account), "--month", f"{start:%Y-%m}"]) == 0
    out = capsys.readouterr().out
    assert "Board" in out and "Sales" in out and "(421 s)" in out and "(1379 s)" in out


async def test_minutes_add_refuses_an_unknown_account_and_a_bad_amount(database_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    unknown = uuid.uuid4()
    assert await asyncio.to_thread(main, ["minutes", "add", "--account", str(unknown), "10"]) == 2
    assert capsys.readouterr().err.strip() == (f"callctl: error: account {unknown} does not exist "
                                               "(see `callctl account list`)")
    with pytest.raises(SystemExit):
        await asyncio.to_thread(main, ["minutes", "add", "--account", str(unknown), "-3"])
    assert "MINUTES must be a whole number of minutes above 0, not '-3'" in capsys.readouterr().err


class _FakeChannel:
    """The ARI side of a meter (the real one is covered by tests/integration/test_minutes_calls.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def set_var(self, channel_id: str, name: str, value: str) -> None:
        self.calls.append(("set_var", name, value))

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.calls.append(("play", *media))

    async def hang_up(self, channel_id: str, reason: str = "normal") -> None:
        self.calls.append(("hang_up",))

    async def stop_playback(self, playback_id: str) -> None:
        self.calls.append(("stop_playback",))


async def test_a_warned_leg_is_rescued_by_a_purchase_and_keeps_its_call(database_url: str) -> None:
    from callctl.billing.minutes import MeterTerms
    from callctl.conference.minutes import LegMeter, PaidLine, open_leg
    from tests.support.asterisk import wait_for

    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        async with pool.acquire() as conn:
            account = await _account(conn)
            conf = await _conference(conn, "Weekly")
        await store.add(pool, account, 3)
        # Warned 2 s before the end of its hold: the purchase below has those 2 s to arrive.
        line = PaidLine(account, MeterTerms(hold_s=3, min_leg_s=1, warn_before_s=2), None, frozenset(),
                        (), ("sound:warn",), ("sound:out",))
        hold = await open_leg(pool, line, conference_id=conf, leg_id=uuid.uuid4(), access_number="+33800000102",
                              person="p@example.com")
        assert hold is not None and hold.held_s == 3
        ops = _FakeChannel()
        exhausted: list[bool] = []

        async def take_out() -> None:
            exhausted.append(True)

        meter = LegMeter(pool, ops, line, hold, channel_id="c1", language="en", local_number="+33900000100",
                         on_exhausted=take_out)
        await meter.start()
        assert ops.calls[0] == ("set_var", "TIMEOUT(absolute)", "5")  # hold + Asterisk's grace
        await asyncio.to_thread(wait_for, lambda: ("play", "sound:warn", "digits:33900000100") in ops.calls, 10,
                                "the warning with the local number")
        await store.add(pool, account, 60)  # bought while the leg is being warned
        await asyncio.to_thread(wait_for, lambda: meter.held_s > 3, 10, "the leg's hold extended")
        assert not exhausted and ("hang_up",) not in ops.calls
        assert ops.calls[-1][:2] == ("set_var", "TIMEOUT(absolute)")  # Asterisk's cut-off moved with the hold
        used = await meter.close()
        assert 2 <= used <= meter.held_s
        p = await store.pool(pool, account)
        assert p is not None and (p.balance_s, p.reserved_s) == (63 - used, 0)
    finally:
        await pool.close()


async def test_a_priced_purchase_is_shown_and_the_bill_text_and_csv_agree(database_url: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    conn = await asyncpg.connect(database_url)
    try:
        account = await _account(conn)
        board = await _conference(conn, "Board")
    finally:
        await conn.close()
    assert await asyncio.to_thread(main, ["minutes", "add", "--account", str(account), "30", "--price", "120",
                                          "--currency", "eur", "--note", "order 1"]) == 0
    assert json.loads(capsys.readouterr().out)["price"] == "120.00"
    assert await asyncio.to_thread(main, ["minutes", "add", "--account", str(account), "10"]) == 0
    capsys.readouterr()
    conn = await asyncpg.connect(database_url)
    try:
        for seconds in (61, 300):
            hold = await store.reserve(conn, account, 400, 1, conference_id=board, leg_id=uuid.uuid4(),
                                       access_number="+33800000102", person="p@example.com")
            assert hold is not None
            await store.settle(conn, hold.id, seconds)
        stored = await conn.fetch("SELECT price, currency FROM minutes_ledger WHERE account_id = $1 "
                                  "AND kind = 'purchase' ORDER BY id", account)
    finally:
        await conn.close()
    assert [(r["price"], r["currency"]) for r in stored] == [(Decimal("120.00"), "EUR"), (None, None)]

    assert await asyncio.to_thread(main, ["minutes", "show", "--account", str(account)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(m["seconds"], m["price"], m["currency"]) for m in shown["movements"]] == [
        (1800, "120.00", "EUR"), (600, None, None), (-61, None, None), (-300, None, None)]
    assert shown["paid"] == {"EUR": "120.00"}

    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    sheet = tmp_path / "bill.csv"
    assert await asyncio.to_thread(main, ["bill", "--account", str(account), "--month", month,
                                          "--csv", str(sheet)]) == 0
    text = capsys.readouterr().out
    rows = list(csv.reader(sheet.read_text(encoding="utf-8").splitlines()))
    section = rows[[r[0] for r in rows].index("section"):]
    by_kind = {r[0]: r for r in section}
    # The text and the CSV show the same figures.
    [line] = [r for r in section if r[0] == "conference"]
    assert (line[1], line[2], line[3], line[4], line[5]) == ("Board", str(board), "2", "361", "6.02")
    assert re.search(rf"Board\s+{board}\s+2 leg\(s\)\s+361 s\s+6\.02 min", text)
    assert by_kind["pool drawn"][4:6] == ["361", "6.02"] and re.search(r"Pool drawn\s+6\.02 min \(361 s\)", text)
    bought = [r for r in section if r[0] == "minutes bought"]
    assert [(r[4], r[6], r[7]) for r in bought] == [("1800", "120.00", "EUR"), ("600", "", "")]
    assert re.search(r"Minutes bought \S+ \(order 1\)\s+30\.00 min \(1800 s, 120\.00 EUR excl\. VAT\)", text)
    assert re.search(r"Minutes bought \S+ \(callctl minutes add\)\s+10\.00 min \(600 s, no price recorded\)", text)
    assert by_kind["pool bought this month"][4:6] == ["2400", "40.00"]
    assert by_kind["paid this month"][6:8] == ["120.00", "EUR"]
    assert re.search(r"Pool bought this month\s+40\.00 min \(2400 s, 120\.00 EUR\)", text)
    assert by_kind["pool balance now"][4:6] == ["2039", "33.98"]
    assert re.search(r"Pool balance now\s+33\.98 min \(2039 s\)", text)


@pytest.mark.parametrize(("args", "message"), [
    (["--price", "120"], "minutes add: --price and --currency go together (e.g. --price 120.00 --currency EUR)"),
    (["--currency", "EUR"], "minutes add: --price and --currency go together"),
    (["--price", "120", "--currency", "EUX"], "minutes add: currency 'EUX' is not an ISO 4217 code"),
    (["--price", "12.345", "--currency", "EUR"], "minutes add: price '12.345' has more decimals than EUR (2)"),
    (["--price", "-5", "--currency", "CHF"], "minutes add: price '-5' must be an amount from 0 to"),
])
async def test_a_bad_price_is_one_line_and_nothing_is_bought(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], args: list[str],
                                                             message: str) -> None:
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    conn = await asyncpg.connect(database_url)
    try:
        account = await _account(conn)
        assert await asyncio.to_thread(main, ["minutes", "add", "--account", str(account), "10", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"callctl: error: {message}"), err
        assert await conn.fetchval("SELECT count(*) FROM minutes_ledger WHERE account_id = $1", account) == 0
    finally:
        await conn.close()
