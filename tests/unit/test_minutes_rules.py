"""Free-minutes pools, pure parts (issue 10): grants, seconds drawn, the statement by conference, and
numbers.yaml ``organizer_paid`` (parsed into the route, every mistake as FILE:LINE:COL)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from callctl.billing.minutes import (
    MeterTerms,
    PaidLeg,
    Purchase,
    as_minutes,
    grant,
    pool_statement,
    used_seconds,
)
from callctl.conference.minutes import PaidLine
from callctl.flows.loader import load_dialplan
from tests.unit.test_flows_loader import REPO, load, one, problems

ACCOUNT = "6f1c2d3e-4b5a-4c6d-8e7f-001122334455"


def test_a_grant_is_what_is_free_up_to_the_slice_and_nothing_below_the_minimum() -> None:
    assert grant(500, 120, 60) == 120
    assert grant(90, 120, 60) == 90
    assert grant(59, 120, 60) == 0
    assert grant(0, 120, 0) == 0  # a pool at zero never grants, whatever the minimum


def test_seconds_drawn_are_rounded_up_and_never_above_the_hold() -> None:
    assert used_seconds(0, 120) == 0
    assert used_seconds(0.2, 120) == 1  # per second from the first second
    assert used_seconds(61.0004, 120) == 61  # clock noise below a millisecond is not a second
    assert used_seconds(61.01, 120) == 62
    assert used_seconds(500, 120) == 120


def test_a_leg_extends_before_its_warning_is_due() -> None:
    terms = MeterTerms(hold_s=120, warn_before_s=60)
    assert terms.warn_before_s < terms.extend_when_left_s < terms.hold_s


def test_statement_groups_legs_by_conference_and_adds_up() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    t0 = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)

    def leg(conf: uuid.UUID, subject: str, minutes: int, used: int) -> PaidLeg:
        return PaidLeg(uuid.uuid4(), conf, subject, "p@example.com", "+33800000102", uuid.uuid4(),
                       t0 + dt.timedelta(minutes=minutes), used)

    legs = [leg(b, "Sales", 5, 30), leg(a, "Board", 0, 61), leg(a, "Board", 9, 1)]
    st = pool_statement(uuid.uuid4(), "2026-11", legs, [Purchase(t0, 3600)], 3508)
    assert [(x.subject, x.legs, x.seconds, str(x.minutes)) for x in st.lines] == [("Board", 2, 62, "1.03"),
                                                                                 ("Sales", 1, 30, "0.50")]
    assert st.used_s == 92 and as_minutes(st.used_s) == Decimal("1.53")  # 92 / 60 = 1.5333...
    assert as_minutes(61) == Decimal("1.02") and as_minutes(0) == Decimal("0.00")  # 1.0166... rounded up


def test_the_local_number_is_the_dialplans_or_the_conferences_first_caller_paid_one() -> None:
    line = PaidLine(uuid.uuid4(), MeterTerms(), None, frozenset({"+33800000102"}), (), (), ())
    assert line.local_for(["+33800000102", "+33900000100", "+33900000101"]) == "+33900000100"
    assert line.local_for(["+33800000102"]) is None
    assert line.with_number(["sound:x"], "+33900000100") == ["sound:x", "digits:33900000100"]
    fixed = PaidLine(uuid.uuid4(), MeterTerms(), "+442000000003", frozenset(), (), (), ())
    assert fixed.local_for(["+33900000100"]) == "+442000000003"


def test_organizer_paid_reaches_the_route(tmp_path: Path) -> None:
    plan = load(tmp_path, {"numbers.yaml": f"""\
        numbers:
          - number: "+33800000102"
            flow: main
            organizer_paid: {{account: "{ACCOUNT}", when_exhausted: move, warn_before: 30, hold: 90,
                              min_leg: 45, local_number: "+33900000100"}}
          - number: "+33900000100"
            flow: main
        """})
    route = plan.route("+33800000102")
    assert route is not None and route.organizer_paid is not None
    paid = route.organizer_paid
    assert (paid.account, paid.when_exhausted, paid.warn_before_s, paid.hold_s, paid.min_leg_s, paid.local_number) == (
        ACCOUNT, "move", 30, 90, 45, "+33900000100")
    other = plan.route("+33900000100")
    assert other is not None and other.organizer_paid is None


def test_organizer_paid_mistakes_are_reported_with_their_place(tmp_path: Path) -> None:
    found = problems(tmp_path, {"numbers.yaml": """\
        numbers:
          - number: "+33800000102"
            flow: main
            organizer_paid: {account: "acme", when_exhausted: later, hold: 0, local_number: "+33800000103"}
          - number: "+33800000103"
            flow: main
            organizer_paid: {warn_before: 10, colour: blue, account: "6f1c2d3e-4b5a-4c6d-8e7f-001122334455"}
          - pattern: "+338XXXXXXXX"
            flow: main
            organizer_paid: {account: "6f1c2d3e-4b5a-4c6d-8e7f-001122334455"}
        """})
    assert "numbers.yaml:4:" in one(found, "organizer_paid account 'acme' is not valid (the organizer's account id")
    one(found, "organizer_paid when_exhausted must be 'end' or 'move', not 'later'")
    one(found, "organizer_paid hold (seconds) must be a whole number from 1 to 3600, not '0'")
    one(found, "unknown option 'colour'")
    one(found, "organizer_paid is for one exact number (a freephone access number), not a pattern")


def test_a_local_number_that_is_itself_organizer_paid_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"numbers.yaml": f"""\
        numbers:
          - number: "+33800000102"
            flow: main
            organizer_paid: {{account: "{ACCOUNT}"}}
          - number: "+33800000103"
            flow: main
            organizer_paid: {{account: "{ACCOUNT}", local_number: "+33800000102"}}
        """})
    assert "numbers.yaml:5:" in one(found, "organizer_paid local_number +33800000102 is itself organizer-paid")


def test_the_shipped_freephone_demo_number_is_organizer_paid() -> None:
    import callctl.conference.steps  # noqa: F401 - the daemon registers its step types before loading

    route = load_dialplan(REPO / "dialplan").route("+33800000102")
    assert route is not None and route.flow == "conference" and route.organizer_paid is not None
    assert route.organizer_paid.when_exhausted == "end" and route.organizer_paid.local_number is None


def test_a_months_purchases_add_up_per_currency_and_unpriced_ones_are_left_out() -> None:
    t0 = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    purchases = [Purchase(t0 + dt.timedelta(days=1), 600, Decimal("12.50"), "EUR"), Purchase(t0, 60),
                 Purchase(t0, 1200, Decimal("30"), "CHF"), Purchase(t0, 600, Decimal("12.55"), "EUR")]
    st = pool_statement(uuid.uuid4(), "2026-11", [], purchases, 2460)
    assert st.purchased_s == 2460 and st.paid == {"CHF": Decimal("30"), "EUR": Decimal("25.05")}
    assert st.purchases[-1].price == Decimal("12.50")  # oldest first


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("120", "eur", ("120.00", "EUR")), ("1500", "JPY", ("1500", "JPY")), ("1.250", "BHD", ("1.250", "BHD")),
    ("0", "GBP", ("0.00", "GBP")),
])
def test_a_price_is_a_decimal_in_an_iso_4217_currency(amount: str, currency: str, expected: tuple[str, str]) -> None:
    from callctl.billing.currency import currency_code, price_in

    code = currency_code(currency)
    assert (str(price_in(amount, code)), code) == expected


@pytest.mark.parametrize(("amount", "currency", "message"), [
    ("12", "EUX", "currency 'EUX' is not an ISO 4217 code (e.g. EUR, CHF, GBP)"),
    ("12", "XAU", "currency 'XAU' is not an ISO 4217 code"),
    ("twelve", "EUR", "price 'twelve' is not an amount (e.g. 120.00)"),
    ("-1", "EUR", "price '-1' must be an amount from 0 to"),
    ("NaN", "EUR", "price 'NaN' must be an amount from 0 to"),
    ("1.005", "EUR", "price '1.005' has more decimals than EUR (2)"),
    ("10.5", "JPY", "price '10.5' has more decimals than JPY (0)"),
])
def test_a_bad_price_or_currency_says_what_is_wrong(amount: str, currency: str, message: str) -> None:
    from callctl.billing.currency import currency_code, price_in

    with pytest.raises(ValueError, match=None) as info:
        price_in(amount, currency_code(currency))
    assert str(info.value).startswith(message)
