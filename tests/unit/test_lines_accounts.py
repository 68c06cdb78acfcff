"""Account options and SIP credential rules (pure)."""

from __future__ import annotations

import uuid

import pytest

from callctl.lines.accounts import (
    LineError,
    account_options,
    default_currency,
    new_sip_password,
    require_e164,
    sip_username_for,
)


@pytest.mark.parametrize(("country", "currency"), [("FR", "EUR"), ("ch", "CHF"), ("GB", "GBP"), ("DE", "EUR"),
                                                    ("LI", "CHF")])
def test_currency_defaults_by_country(country: str, currency: str) -> None:
    assert default_currency(country) == currency
    assert account_options(country=country).currency == currency


def test_defaults_are_payg_one_channel_no_recording() -> None:
    opts = account_options(country="fr")
    assert (opts.country, opts.plan, opts.extra_channels, opts.recording) == ("FR", "payg", 0, False)
    assert opts.channel_limit == 1
    assert account_options(country="FR", extra_channels=2).channel_limit == 3


def test_an_explicit_currency_wins_over_the_country_default() -> None:
    assert account_options(country="CH", currency="eur").currency == "EUR"


@pytest.mark.parametrize("kwargs", [{"country": "XX"}, {"country": "FRA"}, {"country": ""},
                                    {"country": "FR", "currency": "USD"}, {"country": "FR", "plan": "Gold Plan"},
                                    {"country": "FR", "plan": ""}, {"country": "FR", "extra_channels": -1},
                                    {"country": "FR", "extra_channels": 10_000}])
def test_bad_options_are_refused_with_a_line_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(LineError) as info:
        account_options(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == "line_invalid"


def test_numbers_must_be_e164() -> None:
    assert require_e164("+33123456789") == "+33123456789"
    for bad in ("0123456789", "+0123", "+33 1 23", ""):
        with pytest.raises(LineError, match=r"E\.164"):
            require_e164(bad)


def test_sip_credentials_are_stable_names_and_strong_random_passwords() -> None:
    uid = uuid.uuid4()
    assert sip_username_for(uid) == sip_username_for(uid) == "u" + uid.hex[:15]
    passwords = {new_sip_password() for _ in range(50)}
    assert len(passwords) == 50 and all(len(p) >= 24 for p in passwords)
