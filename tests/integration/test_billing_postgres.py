"""Billing on a real PostgreSQL: deck import at scale, refused decks, concurrent reservations,
statements traceable to CDRs, CDR retention."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from decimal import Decimal as D
from pathlib import Path

import asyncpg
import pytest

from callctl.billing import service
from callctl.billing.cli import retention_cutoff
from callctl.billing.decks import DeckFileError, load_deck_file
from callctl.billing.plans import load_plans
from callctl.billing.statements import build_statement
from callctl.cdr.record import CdrRecord
from callctl.cli import main
from callctl.store import billing as store
from callctl.store import cdrs

pytestmark = pytest.mark.integration
HEADER = "prefix,destination,zone,rate_per_minute,currency\n"


async def _account(conn, plan: str = "payg", country: str = "FR", currency: str = "EUR") -> uuid.UUID:
    account_id = uuid.uuid4()
    await conn.execute("INSERT INTO account (id, name, country, currency, plan) VALUES ($1, 'acme', $2, $3, $4)",
                       account_id, country, currency, plan)
    return account_id


async def test_deck_of_100000_rows_imports_and_rates(database_url, tmp_path: Path):
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "".join(f"{33100000 + i},France {i},1,0.0{i % 10}1,EUR\n" for i in range(100_000)))
    rates = load_deck_file(path)
    conn = await asyncpg.connect(database_url)
    try:
        deck_id = await store.import_deck(conn, "big", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), str(path), rates)
        assert await store.deck_rows(conn, deck_id) == 100_000
        (deck,) = await store.load_decks(conn, dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
        assert deck.match("+33100012345678").prefix == "33100012"  # type: ignore[union-attr]
    finally:
        await conn.close()


async def test_bad_rows_reported_with_file_line_and_nothing_imported(database_url, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "44,UK,1,0.03,GBP\n44x,UK,1,0.03,GBP\n33,FR,1,abc,EUR\n")
    with pytest.raises(DeckFileError):
        load_deck_file(path)
    rc = await asyncio.to_thread(main, ["rates", "import", str(path), "--deck", "std"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{path}:3: prefix" in err and f"{path}:4: rate_per_minute" in err
    conn = await asyncpg.connect(database_url)
    try:
        assert await store.deck_count(conn) == 0
    finally:
        await conn.close()


async def test_two_concurrent_reservations_on_a_balance_that_pays_for_one(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        account = await _account(pool)
        await store.add_credit(pool, account, "EUR", D("1.50"))
        results = await asyncio.gather(*(store.reserve(pool, account, D("1.00")) for _ in range(2)))
        assert sum(r is not None for r in results) == 1
        credit = await store.credit(pool, account)
        assert credit is not None and credit.reserved == D("1.00") and credit.available == D("0.50")
    finally:
        await pool.close()


async def test_authorize_and_settle_debit_the_true_cost_and_never_overdraw(database_url, tmp_path: Path):
    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "1,USA,3,0.60,EUR\n")
    at = dt.datetime.now(dt.UTC)
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        await store.import_deck(pool, "std", at - dt.timedelta(days=1), str(path), load_deck_file(path))
        account = await _account(pool)
        await store.add_credit(pool, account, "EUR", D("0.90"))  # 90 s at 0.01/s
        auths = await asyncio.gather(*(service.authorize(pool, account, "+33123456789", "+12025550143", at,
                                                         cap_s=60, min_seconds=60) for _ in range(2)))
        granted = [a for a in auths if a.allowed]
        assert len(granted) == 1 and granted[0].max_seconds == 60, [a.reason for a in auths]
        assert "credit" in (next(a for a in auths if not a.allowed).reason or "")
        rid = granted[0].reservation_id
        assert rid is not None
        assert await service.settle(pool, rid, 61) == D("0.6000")  # capped at the authorised 60 s
        assert await service.settle(pool, rid, 61) == D("0.6000")  # idempotent
        credit = await store.credit(pool, account)
        assert credit is not None and credit.balance == D("0.30") and credit.reserved == 0
    finally:
        await pool.close()


def _cdr(account: uuid.UUID, to: str, started: dt.datetime, seconds: int) -> CdrRecord:
    return CdrRecord(leg_id=uuid.uuid4(), call_id=uuid.uuid4(), direction="outbound", from_number="+33123456789",
                     to_number=to, started_at=started, answered_at=started + dt.timedelta(seconds=2),
                     ended_at=started + dt.timedelta(seconds=2 + seconds), disposition="ANSWERED",
                     hangup_cause=16, hangup_reason="normal", channel_id="c", account_id=str(account))


async def test_statement_lines_add_up_and_reference_cdr_ids(database_url, tmp_path: Path):
    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "1,USA,3,0.03,EUR\n33,France,1,0.02,EUR\n44,UK,1,0.05,EUR\n")
    month = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await store.import_deck(conn, "std", month - dt.timedelta(days=30), str(path), load_deck_file(path))
        account = await _account(conn, plan="unlimited")
        records = ([_cdr(account, "+12025550143", month + dt.timedelta(hours=i), 61 + i) for i in range(5)]
                   + [_cdr(account, "+33612345678", month + dt.timedelta(hours=9), 600),
                      _cdr(account, "+442079460000", month + dt.timedelta(hours=10), 30),
                      _cdr(account, "+12025550143", month + dt.timedelta(days=40), 60)])  # next month
        await cdrs.ensure_partitions(conn, [r.started_at for r in records])
        await cdrs.insert_cdrs(conn, records)
        plans = load_plans()
        legs = await store.outbound_legs(conn, account, month, dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
        decks = await store.load_decks(conn, month, dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
        st = build_statement("2026-03", "EUR", legs, decks, plans.get("unlimited"), plans.vat_rate("FR"))
    finally:
        await conn.close()
    by_dest = {line.destination: line for line in st.lines}
    assert set(by_dest) == {"USA", "France", "UK"}
    assert by_dest["France"].included and by_dest["France"].amount == 0
    assert by_dest["UK"].included  # zone 1 and GB is under no caller condition in plans.yaml
    assert set(by_dest["USA"].leg_ids) == {r.leg_id for r in records[:5]}
    assert sum(line.amount for line in st.lines) == st.total_excl_vat
    assert st.vat == (st.total_excl_vat * D("0.20")).quantize(D("0.01"))
    assert st.total == st.total_excl_vat + st.vat
    # USA: 61..65 s at 0.03/min = 0.0305+0.031+0.0315+0.032+0.0325 = 0.1575
    assert by_dest["USA"].exact_amount == D("0.1575") and by_dest["USA"].amount == D("0.16")


async def test_a_trial_users_included_call_is_authorised_for_what_is_left_of_the_hour(database_url, tmp_path: Path):
    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "33,France,1,0.02,EUR\n")
    at = dt.datetime.now(dt.UTC)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await store.import_deck(pool, "std", at - dt.timedelta(days=1), str(path), load_deck_file(path))
        account = await _account(pool, plan="trial")
        await pool.execute("UPDATE account SET created_at = now() - interval '1 day' WHERE id = $1", account)
        user = uuid.uuid4()
        used = dataclasses.replace(_cdr(account, "+33612345678", at - dt.timedelta(hours=1), 3550),
                                   user_id=str(user), cost=D(0), included=True, rating_prefix="33")
        billed = dataclasses.replace(_cdr(account, "+33612345678", at - dt.timedelta(hours=2), 600),
                                     user_id=str(user), cost=D("0.2"), included=False)  # not from the allowance
        # An emergency call is free and "included", but never uses up the trial's hour.
        emergency = dataclasses.replace(_cdr(account, "112", at - dt.timedelta(hours=3), 1200),
                                        user_id=str(user), cost=D(0), included=True)
        await cdrs.ensure_partitions(pool, [used.started_at, billed.started_at, emergency.started_at])
        await cdrs.insert_cdrs(pool, [used, billed, emergency])
        auth = await service.authorize(pool, account, "+33123456789", "+33612345678", at, user_id=user)
        # The 50 s left are held for the call (callctl.store.billing.hold_allowance), settled when it ends.
        assert auth.allowed and auth.reservation_id is not None and auth.max_seconds == 50, auth.reason
        other = await service.authorize(pool, account, "+33123456789", "+33612345678", at, user_id=uuid.uuid4())
        assert other.max_seconds == 3600
    finally:
        await pool.close()


async def test_stored_ratings_make_the_statement_and_survive_erasing_the_numbers(database_url, tmp_path: Path):
    from callctl.store import privacy

    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "1,USA,3,0.03,EUR\n")
    month = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await store.import_deck(conn, "std", month - dt.timedelta(days=30), str(path), load_deck_file(path))
        account = await _account(conn)
        charged = dataclasses.replace(_cdr(account, "+12025550143", month, 61), rating_deck="std", rating_prefix="1",
                                      rate_per_minute=D("0.03"), cost=D("0.0305"), currency="EUR", included=False)
        await cdrs.ensure_partitions(conn, [month])
        await cdrs.insert_cdrs_copy(conn, [charged])
        [stored] = await cdrs.fetch_by_call_id(conn, charged.call_id)
        assert stored == charged  # the rating columns round-trip

        async def statement():
            legs = await store.outbound_legs(conn, account, month, dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
            decks = await store.load_decks(conn, month, dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
            return build_statement("2026-03", "EUR", legs, decks, load_plans().get("payg"), D("0.20"))

        before = await statement()
        await privacy.erase_person(conn, email=None, number="+12025550143", key=b"k" * 32,
                                   cutoff=month - dt.timedelta(days=365), dry_run=False)
        row = await conn.fetchrow("SELECT to_number, cost FROM cdr")
        assert row["to_number"].startswith("pseudo:") and row["cost"] == D("0.0305")
        after = await statement()
    finally:
        await conn.close()
    assert before.lines[0].exact_amount == after.lines[0].exact_amount == D("0.0305")
    assert after.lines[0].destination == "USA" and after.lines[0].leg_ids == (charged.leg_id,)


async def test_retention_drops_only_partitions_older_than_12_months(database_url, capsys, monkeypatch):
    monkeypatch.setenv("CALLCTL_DATABASE_URL", database_url)
    now = dt.datetime.now(dt.UTC)
    old = dt.datetime(now.year - 2, now.month, 1, tzinfo=dt.UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await cdrs.ensure_partitions(conn, [old, retention_cutoff(now) + dt.timedelta(days=1)])
        before = await cdrs.partitions(conn)
    finally:
        await conn.close()
    assert await asyncio.to_thread(main, ["cdr", "retention", "--dry-run"]) == 0
    assert f"would drop cdr_{old:%Y}m{old:%m}" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["cdr", "retention"]) == 0
    conn = await asyncpg.connect(database_url)
    try:
        after = await cdrs.partitions(conn)
    finally:
        await conn.close()
    assert set(before) - set(after) == {f"cdr_{old:%Y}m{old:%m}"}


async def test_the_deck_cache_reads_a_deck_once_and_follows_a_new_import(database_url, tmp_path: Path):
    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "1,USA,3,0.60,EUR\n")
    at = dt.datetime.now(dt.UTC)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await store.import_deck(pool, "std", at - dt.timedelta(days=1), str(path), load_deck_file(path))
        cache = service.DeckCache()
        [first] = await cache(pool, at)
        [again] = await cache(pool, at)
        assert again is first  # the rows were not read a second time
        path.write_text(HEADER + "1,USA,3,0.30,EUR\n")
        await store.import_deck(pool, "std", at - dt.timedelta(hours=1), str(path), load_deck_file(path))
        [newer] = await cache(pool, at)
        assert newer is not first and newer.match("+12025550143").rate_per_minute == D("0.30")
    finally:
        await pool.close()


async def test_holds_a_dead_engine_left_are_settled_once_from_asterisks_events_else_at_the_full_hold(
        database_url, tmp_path: Path):
    path = tmp_path / "deck.csv"
    path.write_text(HEADER + "1,USA,3,0.60,EUR\n")  # 0.01 EUR a second
    at = dt.datetime.now(dt.UTC)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        await store.import_deck(pool, "std", at - dt.timedelta(days=1), str(path), load_deck_file(path))
        account = await _account(pool)
        await store.add_credit(pool, account, "EUR", D("10"))  # 1000 s: each hold below is 100 s
        holds = {}
        for name in ("up", "cel", "seen", "lost", "cel_unanswered"):
            auth = await service.authorize(pool, account, "+33123456789", "+12025550143", at, cap_s=100,
                                           channel_id=f"1700000000.{name}")
            holds[name] = auth.reservation_id
        # A hold of an engine without migration 0011 (no channel), recent: its call may still be up.
        legacy = await service.authorize(pool, account, "+33123456789", "+12025550143", at, cap_s=100)
        # Asterisk's events: answered, then ended 61.2 s later (62 s billed); one never answered.
        t0 = dt.datetime(2026, 5, 1, 10, 0, 0)
        for uniqueid, events in (("1700000000.cel", [("CHAN_START", 0), ("ANSWER", 3), ("HANGUP", 64.2),
                                                      ("CHAN_END", 64.2)]),
                                 ("1700000000.cel_unanswered", [("CHAN_START", 0), ("HANGUP", 20), ("CHAN_END", 20)]),
                                 ("1700000000.up", [("CHAN_START", 0), ("ANSWER", 1)])):
            for kind, offset in events:
                await pool.execute("INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid) "
                                   "VALUES ($1, $2, 'PJSIP/pstn-1', $3, $3)", kind,
                                   t0 + dt.timedelta(seconds=offset), uniqueid)

        # Two engines sweeping at once: every hold is debited once.
        sweeps = await asyncio.gather(*(service.settle_abandoned(pool, {"1700000000.up"},
                                                                 {"1700000000.seen": 7}) for _ in range(2)))
        assert [s.kept for s in sweeps] == [2, 2]  # the call still up, the legacy hold
        by_id = {s.reservation_id: s for s in sweeps[0].settled}
        assert set(by_id) == {holds[n] for n in ("cel", "seen", "lost", "cel_unanswered")}
        assert (by_id[holds["cel"]].source, by_id[holds["cel"]].cost) == ("cel", D("0.62"))
        assert (by_id[holds["seen"]].source, by_id[holds["seen"]].cost) == ("engine", D("0.07"))
        assert (by_id[holds["lost"]].source, by_id[holds["lost"]].cost) == ("full_hold", D("1.00"))
        assert (by_id[holds["cel_unanswered"]].source, by_id[holds["cel_unanswered"]].cost) == ("cel", D("0"))
        assert (await service.settle_abandoned(pool, {"1700000000.up"})).settled == []  # idempotent
        calls = await pool.fetch("SELECT reservation_id, amount FROM credit_ledger WHERE kind = 'call'")
        assert sorted(r["reservation_id"] for r in calls) == sorted(by_id)  # one debit per hold, never two
        credit = await store.credit(pool, account)
        assert credit is not None and credit.balance == D("10") - D("1.69")
        assert credit.reserved == D("2.00")  # the call still up and the legacy hold are kept
        open_ = await store.open_reservations(pool, service.UNKNOWN_CHANNEL_MARGIN_S)
        assert {h.id for h in open_} == {holds["up"], legacy.reservation_id}
        # The call still up ends: the next sweep (its adopted call finished) settles it from its events.
        await pool.execute("INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid) "
                           "VALUES ('CHAN_END', $1, 'PJSIP/pstn-1', '1700000000.up', '1700000000.up')",
                           t0 + dt.timedelta(seconds=11))
        [last] = (await service.settle_abandoned(pool, set())).settled
        assert (last.reservation_id, last.seconds, last.cost) == (holds["up"], 10, D("0.10"))
        # A channel Asterisk still has (an originated call ringing) keeps its hold; once gone, full hold.
        ringing = await service.authorize(pool, account, "+33123456789", "+12025550143", at, cap_s=100,
                                          channel_id="1700000000.ringing")

        async def still_ringing(channel: str) -> bool:
            return channel == "1700000000.ringing"

        async def gone(channel: str) -> bool:
            return False

        kept = await service.settle_abandoned(pool, set(), is_up=still_ringing)
        assert (kept.settled, kept.kept) == ([], 2)
        [cut] = (await service.settle_abandoned(pool, set(), is_up=gone)).settled
        assert (cut.reservation_id, cut.source, cut.cost) == (ringing.reservation_id, "full_hold", D("1.00"))
        # Another Asterisk node's call (one database for both) is left to that node's engine.
        other, mine = [await service.authorize(pool, account, "+33123456789", "+12025550143", at, cap_s=100,
                                               channel_id=f"1700000000.{node}", asterisk_id=node)
                       for node in ("node-b", "node-a")]
        sweep = await service.settle_abandoned(pool, set(), is_up=gone, asterisk_id="node-a")
        assert [s.reservation_id for s in sweep.settled] == [mine.reservation_id] and sweep.kept == 1  # legacy
        assert {h.id for h in await store.open_reservations(pool, 0)} == {other.reservation_id, legacy.reservation_id}
    finally:
        await pool.close()
