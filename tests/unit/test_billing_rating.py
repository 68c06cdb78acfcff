"""Rating at the boundaries, plans, trial limits, VAT, and hypothesis properties."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callctl.billing.decks import DeckFileError, read_deck
from callctl.billing.plans import load_plans, trial_problem
from callctl.billing.prepaid import max_authorised_seconds
from callctl.billing.rating import Deck, Rate, billed_seconds, call_cost, effective_deck
from callctl.billing.statements import CdrLeg, build_statement, fair_use_flags, rate_call

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
UK = Rate("44", "United Kingdom", "1", D("0.03"), "GBP")
UK_MOBILE = Rate("447", "United Kingdom mobile", "2", D("0.10"), "GBP")
PREMIUM = Rate("449", "UK premium", "P", D("1.50"), "GBP", per_call=D("0.50"), increment_s=60, first_block_s=60)
PLANS = load_plans()


def deck(*rates: Rate, name: str = "std", at: dt.datetime = T0, deck_id: int = 1) -> Deck:
    return Deck(name, at, {r.prefix: r for r in rates}, deck_id)


def test_61_seconds_to_uk_landline_costs_0_0305():
    assert call_cost(UK, 61) == D("0.0305")


@pytest.mark.parametrize(("seconds", "billed", "cost"), [
    (0, 0, "0.0000"), (1, 1, "0.0005"), (59, 59, "0.0295"), (60, 60, "0.0300"), (61, 61, "0.0305")])
def test_per_second_from_the_first_second(seconds, billed, cost):
    assert billed_seconds(UK, seconds) == billed
    assert call_cost(UK, seconds) == D(cost)


@pytest.mark.parametrize(("first", "inc", "seconds", "billed"), [
    (30, 6, 1, 30), (30, 6, 30, 30), (30, 6, 31, 36), (30, 6, 36, 36), (30, 6, 37, 42),
    (60, 60, 1, 60), (60, 60, 60, 60), (60, 60, 61, 120), (1, 60, 2, 61), (60, 1, 61, 61)])
def test_first_block_then_increments(first, inc, seconds, billed):
    assert billed_seconds(Rate("1", "x", "1", D(1), "EUR", first_block_s=first, increment_s=inc), seconds) == billed


def test_premium_is_per_call_plus_whole_minutes():
    assert PREMIUM.premium and not UK.premium
    assert call_cost(PREMIUM, 1) == D("2.0000")
    assert call_cost(PREMIUM, 61) == D("3.5000")
    assert call_cost(PREMIUM, 0) == D("0.0000")


def test_connect_fee_and_rounding_half_up_once_per_call():
    r = Rate("33", "France", "1", D("0.00003"), "EUR", connect_fee=D("0.01"))
    # 0.01 + 0.00003 * 1 / 60 = 0.0100005 -> 0.0100 (half up at the 4th decimal: 0.01000|05)
    assert call_cost(r, 1) == D("0.0100")
    r2 = Rate("33", "France", "1", D("0.003"), "EUR")
    # 0.003 * 1 / 60 = 0.00005 -> 0.0001 (exact half rounds up)
    assert call_cost(r2, 1) == D("0.0001")


def test_longest_prefix_wins_over_shorter():
    d = deck(UK, UK_MOBILE)
    assert d.match("+447911123456") == UK_MOBILE
    assert d.match("+441632960000") == UK
    assert d.match("+33123456789") is None


def test_future_deck_takes_over_at_its_instant():
    old = deck(UK, deck_id=1)
    new = deck(Rate("44", "United Kingdom", "1", D("0.02"), "GBP"), at=T0 + dt.timedelta(days=10), deck_id=2)
    switch = T0 + dt.timedelta(days=10)
    assert effective_deck([old, new], switch - dt.timedelta(microseconds=1)) is old
    assert effective_deck([old, new], switch) is new
    assert effective_deck([old, new], T0 - dt.timedelta(seconds=1)) is None


FR_DECK = deck(Rate("33", "France", "1", D("0.02"), "EUR"), Rate("41", "Switzerland", "1", D("0.05"), "EUR"),
               Rate("49", "Germany", "1", D("0.02"), "EUR"), Rate("1", "USA", "3", D("0.01"), "EUR"))
FR, CH, DE, US = "+33123456789", "+41441234567", "+4930123456", "+12025550143"


@pytest.mark.parametrize(("caller", "dest", "included"), [
    (FR, DE, True), (FR, FR, True), (CH, DE, False), (CH, CH, True), (FR, CH, False), (US, FR, False),
    (FR, US, False)])
def test_unlimited_includes_eea_only_from_eea_and_switzerland_only_from_swiss(caller, dest, included):
    r = rate_call([FR_DECK], PLANS.get("unlimited"), caller, dest, 61, T0)
    assert r.included is included, r.why
    assert (r.cost == 0) is included


def test_payg_bills_zone_1():
    r = rate_call([FR_DECK], PLANS.get("payg"), FR, FR, 61, T0)
    assert not r.included and r.cost == D("0.0203") and r.billed_seconds == 61


def test_trial_limits():
    trial = PLANS.get("trial")
    assert trial_problem(trial, T0, T0 + dt.timedelta(days=14) - dt.timedelta(seconds=1), 3, 1) is None
    assert "14-day" in (trial_problem(trial, T0, T0 + dt.timedelta(days=14), 3, 1) or "")
    assert "3 users" in (trial_problem(trial, T0, T0, 4, 1) or "")
    assert "1 number" in (trial_problem(trial, T0, T0, 3, 2) or "")


def test_trial_hour_per_user_then_deck_rate():
    trial = PLANS.get("trial")
    r = rate_call([FR_DECK], trial, FR, FR, 100, T0, included_used_s=3550)
    assert not r.included and r.billed_seconds == 50 and r.cost == D("0.0167")
    assert rate_call([FR_DECK], trial, FR, FR, 50, T0, included_used_s=3550).included


def test_statement_vat_france_20_percent_and_lines_add_up():
    legs = [CdrLeg(uuid.uuid4(), T0 + dt.timedelta(minutes=i), FR, US, 61, "u1") for i in range(3)]
    st_ = build_statement("2026-03", "EUR", legs, [FR_DECK], PLANS.get("unlimited"), PLANS.vat_rate("FR"))
    assert [line.destination for line in st_.lines] == ["USA"]
    assert st_.lines[0].exact_amount == D("0.0306") and st_.lines[0].amount == D("0.03")
    assert set(st_.lines[0].leg_ids) == {leg.leg_id for leg in legs}
    assert st_.total_excl_vat == D("0.03") and st_.vat == D("0.01") and st_.total == D("0.04")


def test_statement_uses_the_rating_stored_at_call_end_even_when_the_numbers_are_pseudonyms():
    charged = CdrLeg(uuid.uuid4(), T0, "pseudo:ab", "pseudo:cd", 61, "u1", rating_prefix="1", cost=D("0.0102"),
                     included=False)
    free = CdrLeg(uuid.uuid4(), T0, FR, "15", 30, "u1", cost=D(0), included=True)
    st_ = build_statement("2026-03", "EUR", [charged, free], [FR_DECK], PLANS.get("payg"), PLANS.vat_rate("FR"))
    by_dest = {line.destination: line for line in st_.lines}
    assert by_dest["USA"].exact_amount == D("0.0102") and by_dest["USA"].leg_ids == (charged.leg_id,)
    assert by_dest["Free calls (emergency)"].amount == D("0.00") and not st_.unrated


def test_statement_rates_from_the_numbers_when_the_stored_prefix_left_the_deck():
    leg = CdrLeg(uuid.uuid4(), T0, FR, US, 60, "u1", rating_prefix="999", cost=D("9"), included=False)
    st_ = build_statement("2026-03", "EUR", [leg], [FR_DECK], PLANS.get("payg"), PLANS.vat_rate("FR"))
    assert st_.lines[0].destination == "USA" and st_.lines[0].exact_amount == D("0.0100")


def test_fair_use_flags_above_five_times_the_average():
    usage = {str(i): D(100) for i in range(20)} | {"heavy": D(3000)}
    assert set(fair_use_flags(usage, D(5))) == {"heavy"}
    assert fair_use_flags({"a": D(0)}, D(5)) == {}


def test_bad_deck_rows_are_all_reported_with_file_and_line():
    text = ("prefix,destination,zone,rate_per_minute,currency\n44,UK,1,0.03,GBP\nabc,X,1,0.1,EUR\n"
            "33,FR,1,-1,EUR\n44,UK again,1,0.03,GBP\n41,CH,1,0.05,USD\n")
    with pytest.raises(DeckFileError) as err:
        read_deck(io.StringIO(text), "d.csv")
    assert [p.split(":")[1] for p in err.value.problems] == ["3", "4", "5", "6"]
    assert all(p.startswith("d.csv:") for p in err.value.problems)


def test_deck_optional_columns_and_missing_header():
    rates = read_deck(io.StringIO("prefix,destination,zone,rate_per_minute,currency,per_call,increment_s\n"
                                  "+449,Premium,P,1.5,GBP,0.5,60\n"), "d.csv")
    assert rates[0].prefix == "449" and rates[0].per_call == D("0.5") and rates[0].increment_s == 60
    with pytest.raises(DeckFileError, match=r"d\.csv:1: header lacks required column"):
        read_deck(io.StringIO("prefix,destination\n1,x\n"), "d.csv")


rates_st = st.builds(
    Rate, prefix=st.just("1"), destination=st.just("x"), zone=st.just("1"),
    rate_per_minute=st.decimals(min_value=0, max_value=10, places=4), currency=st.just("EUR"),
    connect_fee=st.decimals(min_value=0, max_value=1, places=4), first_block_s=st.integers(1, 120),
    increment_s=st.integers(1, 120), per_call=st.decimals(min_value=0, max_value=2, places=4))


@given(rates_st, st.integers(0, 20_000), st.integers(0, 20_000))
def test_cost_never_decreases_with_duration(rate, a, b):
    lo, hi = sorted((a, b))
    assert call_cost(rate, lo) <= call_cost(rate, hi)


@given(rates_st, st.decimals(min_value=0, max_value=100, places=4))
def test_authorised_duration_never_costs_more_than_the_balance(rate, balance):
    n = max_authorised_seconds(balance, rate, cap_s=20_000)
    assert call_cost(rate, n) <= balance
    if 0 < n < 20_000:
        assert call_cost(rate, n + 1) > balance
