"""Emergency classification per caller country and dialer compliance rules (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import callctl.conference.steps  # noqa: F401  (registers the conference step type)
from callctl.flows.loader import load_dialplan
from callctl.gating.compliance import caller_id_verdict, cap_verdict, is_french_mobile, window_verdict
from callctl.gating.emergency import (
    NOT_ACTIVATED,
    EmergencyStatus,
    emergency_number,
    emergency_verdict,
    endpoint_variables,
    realtime_set_var,
)

COUNTRIES = load_dialplan(Path(__file__).resolve().parents[2] / "dialplan").countries
PARIS = ZoneInfo("Europe/Paris")
VERIFIED = EmergencyStatus(True, "1 rue de la Paix, 75002 Paris", dt.datetime(2025, 1, 1, tzinfo=dt.UTC))

EXPECTED = {
    "FR": {"112", "15", "17", "18", "114", "115", "119", "196", "191", "197"},
    "BE": {"112", "100", "101"}, "CH": {"112", "117", "118", "144"}, "GB": {"999", "112"},
    "IE": {"999", "112"}, "DE": {"110", "112"}, "NL": {"112"}, "PT": {"112"},
    "ES": {"112", "091", "092", "061", "080", "085", "062"}, "IT": {"112", "113", "115", "118"},
    "SE": {"112"}, "AT": {"112", "122", "133", "144", "140", "141"}, "US": {"911"},
}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_every_country_row_classifies_its_emergency_numbers(code: str) -> None:
    for number in EXPECTED[code]:
        assert emergency_number(COUNTRIES, code, number) == number
    assert EXPECTED[code] <= set(COUNTRIES[code].emergency_numbers)


@pytest.mark.parametrize("code", sorted(c for c in EXPECTED if c != "US"))
def test_eligible_country_allows_only_enabled_and_verified(code: str) -> None:
    country = COUNTRIES[code]
    assert emergency_verdict(country, VERIFIED).rule == "emergency_allowed"
    assert emergency_verdict(country, NOT_ACTIVATED).rule == "emergency_not_enabled"
    unproved = EmergencyStatus(True, "somewhere", None)
    assert emergency_verdict(country, unproved).rule == "emergency_location_unverified"


def test_us_911_is_recognised_but_never_offered() -> None:
    assert emergency_number(COUNTRIES, "US", "911") == "911"
    verdict = emergency_verdict(COUNTRIES["US"], VERIFIED)
    assert (verdict.decision, verdict.rule) == ("deny", "emergency_not_offered")


@pytest.mark.parametrize(("country", "dialled"), [("DE", "1120"), ("GB", "911"), ("US", "9911"), ("GB", "15"),
                                                  ("FR", "0115"), ("FR", "+33112"), ("ZZ", "112")])
def test_look_alikes_are_not_emergency_numbers(country: str, dialled: str) -> None:
    assert emergency_number(COUNTRIES, country, dialled) is None


def test_fifteen_is_emergency_from_france_only() -> None:
    assert emergency_number(COUNTRIES, "FR", "15") == "15"
    assert emergency_number(COUNTRIES, "FR", " 1 12 ") == "112"


def _paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


@pytest.mark.parametrize(("at", "rule"), [
    (_paris(2025, 3, 4, 9, 59, 59), "canvassing_hours"),
    (_paris(2025, 3, 4, 10, 0, 0), None),
    (_paris(2025, 3, 4, 12, 59, 59), None),
    (_paris(2025, 3, 4, 13, 0, 0), "canvassing_hours"),
    (_paris(2025, 3, 4, 14, 0, 0), None),
    (_paris(2025, 3, 4, 19, 59, 59), None),
    (_paris(2025, 3, 4, 20, 0, 0), "canvassing_hours"),
    (_paris(2025, 3, 8, 11, 0, 0), "canvassing_hours"),  # a Saturday
    (_paris(2025, 7, 14, 11, 0, 0), "canvassing_holiday"),  # a Monday, national day
    (_paris(2025, 5, 1, 11, 0, 0), "canvassing_holiday"),
])
def test_french_canvassing_windows_at_their_edges(at: dt.datetime, rule: str | None) -> None:
    verdict = window_verdict(COUNTRIES["FR"], at)
    assert (verdict.rule if verdict else None) == rule


def test_windows_are_french_time_whatever_the_input_zone() -> None:
    utc = dt.datetime(2025, 3, 4, 9, 0, 0, tzinfo=dt.UTC)  # 10:00 in Paris (CET)
    assert window_verdict(COUNTRIES["FR"], utc) is None
    assert window_verdict(COUNTRIES["FR"], utc - dt.timedelta(seconds=1)) is not None


@pytest.mark.parametrize(("number", "mobile"), [("+33612345678", True), ("+33712345678", True),
                                               ("0612345678", True), ("07 12 34 56 78", True),
                                               ("+33112345678", False), ("+33912345678", False),
                                               ("+447700900123", False)])
def test_french_mobile_is_refused_as_automated_caller_id(number: str, mobile: bool) -> None:
    assert is_french_mobile(number) is mobile
    assert (caller_id_verdict(number) is not None) is mobile


def test_fifth_call_is_over_the_cap() -> None:
    assert cap_verdict(3) is None
    verdict = cap_verdict(4)
    assert verdict is not None and verdict.rule == "callee_cap"


# -- Asterisk's copy of the emergency status (endpoint set_var) -----------------------------------


def _parse_set_var(value: str) -> dict[str, str]:
    """What res_config_pgsql + res_pjsip make of the column: split on ';', ^XX decoded, name=value."""
    out = {}
    for chunk in value.split(";"):
        name, _, raw = chunk.partition("=")
        out[name] = raw.replace("^3B", ";").replace("^5E", "^")
    return out


def test_endpoint_variables_follow_the_engines_rules_and_carry_the_location_only_when_allowed() -> None:
    allowed = endpoint_variables("acc", COUNTRIES["FR"], VERIFIED, "+33170000001")
    assert allowed["CALLCTL_EMERGENCY"] == "allow" and allowed["CALLCTL_EMERGENCY_RULE"] == "emergency_allowed"
    assert allowed["CALLCTL_EMERGENCY_NUMBERS"].split("-") == list(COUNTRIES["FR"].emergency_numbers)
    assert allowed["CALLCTL_EMERGENCY_CALLBACK"] == "+33170000001" and allowed["CALLCTL_EMERGENCY_LANG"] == "fr"
    assert allowed["CALLCTL_EMERGENCY_LOCATION"] == VERIFIED.location
    refused = endpoint_variables("acc", COUNTRIES["FR"], NOT_ACTIVATED, "+33170000001")
    assert refused["CALLCTL_EMERGENCY_RULE"] == "emergency_not_enabled"
    assert "CALLCTL_EMERGENCY_LOCATION" not in refused and "CALLCTL_EMERGENCY_CALLBACK" not in refused
    us = endpoint_variables("acc", COUNTRIES["US"], VERIFIED, None)
    assert (us["CALLCTL_EMERGENCY"], us["CALLCTL_EMERGENCY_NUMBERS"]) == ("deny", "911")  # recognised, refused
    unknown = endpoint_variables("acc", None, VERIFIED, None)
    assert (unknown["CALLCTL_EMERGENCY"], unknown["CALLCTL_EMERGENCY_NUMBERS"]) == ("deny", "")


def test_set_var_escapes_what_realtime_would_split() -> None:
    status = EmergencyStatus(True, "Bat. B; 3^e etage,\n 12 rue X", VERIFIED.verified_at)
    variables = endpoint_variables("acc", COUNTRIES["FR"], status, "+33170000001")
    assert _parse_set_var(realtime_set_var(variables)) == variables
    assert variables["CALLCTL_EMERGENCY_LOCATION"] == "Bat. B; 3^e etage, 12 rue X"  # one line for the header
