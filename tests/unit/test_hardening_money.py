"""Money and numbers, pure (issue 15): no price silently changed, E.164 look-alikes, storable text,
the country of a number from its calling code."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal as D
from io import StringIO

import pytest

from callctl.billing.decks import DeckFileError, read_deck
from callctl.billing.plans import _parsed_country_of, country_of, load_plans
from callctl.billing.rating import Deck, Rate, money_text
from callctl.billing.statements import CdrLeg, build_statement, rate_call
from callctl.gating.compliance import penalty_eur
from callctl.numbers import e164_or_none, is_e164, storable, to_e164

AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def test_money_is_printed_with_its_scale_and_never_rounded() -> None:
    assert [money_text(D(x)) for x in ("0", "1", "0.5", "0.0305", "0.00001")] == \
        ["0.0000", "1.0000", "0.5000", "0.0305", "0.00001"]
    assert money_text(D("3"), D("0.01")) == "3.00"


def test_a_penalty_is_never_rounded_to_the_cent() -> None:
    assert penalty_eur(0) == D("0.00") and str(penalty_eur(0)) == "0.00"
    assert penalty_eur(3, D("0.025")) == D("0.075")  # not 0.08
    assert str(penalty_eur(5)) == "0.10"


@pytest.mark.parametrize(("value", "kept"), [("0.123456", True), ("0.1234560", True), ("0.1234567", False),
                                             ("99999999.999999", True), ("100000000", False)])
def test_deck_prices_beyond_the_stores_precision_are_refused_with_their_line(value: str, kept: bool) -> None:
    text = f"prefix,destination,zone,rate_per_minute,currency\n33,France,1,{value},EUR\n"
    if kept:
        (rate,) = read_deck(StringIO(text), "deck.csv")
        assert rate.rate_per_minute == D(value)
    else:
        with pytest.raises(DeckFileError) as exc:
            read_deck(StringIO(text), "deck.csv")
        assert exc.value.problems[0].startswith("deck.csv:2: rate_per_minute")


def test_a_deck_says_which_rows_are_premium() -> None:
    text = ("prefix,destination,zone,rate_per_minute,currency,per_call,increment_s,premium\n"
            "3389,Premium,1,0.8,EUR,,,yes\n3368,Per call,1,0.1,EUR,0.5,60,\n33,France,1,0.02,EUR,,,\n"
            "3390,Not premium after all,1,0.1,EUR,0.5,,no\n")
    rates = {r.prefix: r for r in read_deck(StringIO(text), "deck.csv")}
    assert [rates[p].premium for p in ("3389", "3368", "33", "3390")] == [True, True, False, False]
    with pytest.raises(DeckFileError, match=r"deck.csv:2: premium must be yes or no"):
        read_deck(StringIO(text.replace(",yes\n", ",maybe\n")), "deck.csv")
    with pytest.raises(DeckFileError, match=r"deck.csv:2: destination contains a control character"):
        read_deck(StringIO("prefix,destination,zone,rate_per_minute,currency\n33,Fr\x00ance,1,0.02,EUR\n"), "deck.csv")


def test_premium_is_never_included_and_the_explanation_says_why() -> None:
    plans = load_plans()
    premium = Rate("3389", "Premium", "1", D("0.80"), "EUR", premium_flag=True)
    deck = Deck("std", AT, {"3389": premium})
    r = rate_call([deck], plans.get("unlimited"), "+33123456789", "+33891234567", 60, AT, currency="EUR")
    assert not r.included and r.cost == D("0.8000") and "premium-rate number" in r.why


def test_a_row_in_another_currency_is_included_at_zero_or_refused_when_billed() -> None:
    plans = load_plans()
    deck = Deck("std", AT, {"44": Rate("44", "UK", "1", D("0.03"), "GBP")})
    included = rate_call([deck], plans.get("unlimited"), "+33123456789", "+442079460000", 60, AT, currency="EUR")
    assert (included.included, included.currency, included.cost, included.refused) == (True, "EUR", D("0.0000"), None)
    billed = rate_call([deck], plans.get("payg"), "+33123456789", "+442079460000", 60, AT, currency="EUR")
    assert billed.refused is not None and "GBP" in billed.refused and "EUR" in billed.refused
    legs = [CdrLeg(uuid.uuid4(), AT, "+33123456789", "+442079460000", 60, None),
            CdrLeg(uuid.uuid4(), AT, "+33123456789", "+442079460000", 60, None, "44", D("0.03"), False)]
    st = build_statement("2026-03", "EUR", legs, [deck], plans.get("payg"), D("0.20"))
    # in the statement's own order: time, then leg id (both legs start at AT; their ids are random)
    assert st.lines == () and [a.leg_id for a in st.attention] == sorted((leg.leg_id for leg in legs), key=str)


@pytest.mark.parametrize("text", ["+", "+abc", "+15", "+33abc", "+1800FLOWERS", "++33123456789", "+0123456", "",
                                  "12\x00", "+33 1 23 45 67 89\x00"])
def test_look_alikes_of_e164_are_not_numbers(text: str) -> None:
    assert e164_or_none(text, "FR") is None and not is_e164(text)


def test_numbers_people_type_are_normalised() -> None:
    assert e164_or_none("01 23 45 67 89", "FR") == "+33123456789"
    assert e164_or_none("(01) 23-45-67.89", "FR") == "+33123456789"
    assert to_e164("anonymous", "FR") == "anonymous" and to_e164("+abc", None) == "+abc"  # raw kept for records
    assert is_e164("+33123456789")


def test_text_postgresql_cannot_store_is_replaced_and_cut() -> None:
    assert storable("+33\x00123\udcff\x7f") == "+33\ufffd123\ufffd\ufffd"
    assert len(storable("9" * 1000)) == 64
    assert storable("René <+33123456789>") == "René <+33123456789>"


def test_the_country_of_a_number_from_its_calling_code_is_what_phonenumbers_says() -> None:
    rng = random.Random(15)
    numbers = ["+" + "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(0, 16))) for _ in range(20_000)]
    numbers += ["+358181234567", "+390669812345", "+4779012345", "+12025550143", "+74951234567", "+441481123456"]
    assert [n for n in numbers if country_of(n) != _parsed_country_of(n)] == []
