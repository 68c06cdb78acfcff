"""Fraud rules (pure): destination classes, permissions, velocity limits, brute-force counting, settings."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from callctl.cli import load_checked_settings
from callctl.config import Settings
from callctl.errors import ConfigError
from callctl.fraud import FraudError
from callctl.fraud.bruteforce import BlockPolicy, FailureCounter, event_address, is_trusted, parse_networks
from callctl.fraud.edge import acl_values
from callctl.fraud.rules import (
    CALLS_PER_MINUTE,
    COUNTRY_BARRED,
    DEFAULT_PERMISSIONS,
    HIGH_RISK_BARRED,
    INTERNATIONAL_CALLS,
    PREMIUM_BARRED,
    SATELLITE_BARRED,
    SPEND_DAY,
    SPEND_HOUR,
    ZONE_BARRED,
    Limits,
    Permissions,
    Usage,
    classify,
    permission_refusal,
    velocity,
)


@pytest.mark.parametrize(("number", "rule"), [
    ("+33899123456", PREMIUM_BARRED),  # French 089x premium rate
    ("+19005551234", PREMIUM_BARRED),  # US 900
    ("+979123456789", PREMIUM_BARRED),  # international premium rate
    ("+8816123456789", SATELLITE_BARRED),  # Iridium
    ("+870773123456", SATELLITE_BARRED),  # Inmarsat
    ("+88213123456", HIGH_RISK_BARRED),  # international networks
    ("+5372345678", HIGH_RISK_BARRED),  # Cuba, on the default list
])
def test_premium_satellite_and_high_risk_destinations_are_off_for_a_new_account(number: str, rule: str) -> None:
    refusal = permission_refusal(DEFAULT_PERMISSIONS, classify(number, "FR"))
    assert refusal is not None and refusal.rule == rule
    assert refusal.disposition == "FRAUD_" + rule.upper()
    assert number in refusal.reason


@pytest.mark.parametrize("number", ["+33123456789", "+33612345678", "+442071234567", "+12125551234"])
def test_ordinary_destinations_are_allowed_by_default(number: str) -> None:
    assert permission_refusal(DEFAULT_PERMISSIONS, classify(number, "FR")) is None


def test_zones_are_seen_from_the_accounts_country() -> None:
    assert classify("+33123456789", "FR").zone == "domestic"
    assert not classify("+33123456789", "FR").international
    assert classify("+442071234567", "FR").zone == "europe"
    assert classify("+12125551234", "FR").zone == "world"
    assert classify("+33123456789", "GB").zone == "europe" and classify("+33123456789", "GB").international


def test_country_allow_list_deny_list_and_zones() -> None:
    perms = DEFAULT_PERMISSIONS.changed(countries=["fr", "BE"])
    assert permission_refusal(perms, classify("+3221234567", "FR")) is None
    refusal = permission_refusal(perms, classify("+442071234567", "FR"))
    assert refusal is not None and refusal.rule == COUNTRY_BARRED and "BE, FR" in refusal.reason
    denied = DEFAULT_PERMISSIONS.changed(deny_countries=["US"])
    assert permission_refusal(denied, classify("+12125551234", "FR")).rule == COUNTRY_BARRED  # type: ignore[union-attr]
    domestic = DEFAULT_PERMISSIONS.changed(zones=["domestic"])
    assert permission_refusal(domestic, classify("+442071234567", "FR")).rule == ZONE_BARRED  # type: ignore[union-attr]
    assert permission_refusal(domestic, classify("+33123456789", "FR")) is None


def test_a_premium_permission_lets_premium_through() -> None:
    assert permission_refusal(DEFAULT_PERMISSIONS.changed(premium=True), classify("+33899123456", "FR")) is None


def test_permissions_survive_json_and_refuse_bad_input_naming_it() -> None:
    perms = Permissions(countries=frozenset({"FR"}), premium=True)
    assert Permissions.from_json(perms.to_json()) == perms
    with pytest.raises(FraudError, match="--countries: 'XX' is not an ISO 3166"):
        DEFAULT_PERMISSIONS.changed(countries=["XX"])
    with pytest.raises(FraudError, match="--zones: unknown zone 'mars'"):
        DEFAULT_PERMISSIONS.changed(zones=["mars"])


def test_limits_validate_each_value_naming_it() -> None:
    assert Limits().changed(hour="12.50").hour == Decimal("12.50")
    with pytest.raises(FraudError, match="limit 'hour': 'abc' is not an amount"):
        Limits().changed(hour="abc")
    with pytest.raises(FraudError, match="limit 'day': -1 must be a positive amount"):
        Limits().changed(day="-1")
    with pytest.raises(FraudError, match="limit 'warn_percent': 120 must be between 1 and 100"):
        Limits().changed(warn_percent=120)
    assert Limits.from_json(Limits(hour=Decimal(5)).to_json()) == Limits(hour=Decimal(5))


LIMITS = Limits(hour=Decimal(10), day=Decimal(50), calls_per_minute=5, international_calls=2, warn_percent=80)


@pytest.mark.parametrize(("usage", "international", "rule"), [
    (Usage(spent_hour=Decimal(10)), False, SPEND_HOUR),
    (Usage(spent_day=Decimal(50)), False, SPEND_DAY),
    (Usage(calls_last_minute=5), False, CALLS_PER_MINUTE),
    (Usage(international_open=2), True, INTERNATIONAL_CALLS),
])
def test_reaching_a_hard_limit_refuses_the_call(usage: Usage, international: bool, rule: str) -> None:
    refusal, warnings = velocity(LIMITS, usage, own_hold=Decimal(0), international=international, currency="EUR")
    assert refusal is not None and refusal.rule == rule and not warnings


def test_spend_under_the_limit_admits_the_call_even_if_its_hold_goes_over() -> None:
    # Money never exceeds the limit plus one call's hold: the call is judged on what came before it.
    refusal, warnings = velocity(LIMITS, Usage(spent_hour=Decimal("9.99")), own_hold=Decimal(5),
                                 international=False, currency="EUR")
    assert refusal is None and [w.rule for w in warnings] == [SPEND_HOUR]


def test_international_calls_limit_ignores_domestic_calls() -> None:
    refusal, _ = velocity(LIMITS, Usage(international_open=2), own_hold=Decimal(0), international=False,
                          currency="EUR")
    assert refusal is None


def test_warnings_start_at_the_warn_percentage() -> None:
    _, quiet = velocity(LIMITS, Usage(spent_hour=Decimal(7)), own_hold=Decimal("0.99"), international=False,
                        currency="EUR")
    assert quiet == []
    _, warned = velocity(LIMITS, Usage(spent_hour=Decimal(7)), own_hold=Decimal(1), international=False,
                         currency="EUR")
    assert [w.rule for w in warned] == [SPEND_HOUR] and "80 %" in warned[0].reason


def test_n_failures_within_the_window_block_an_address_and_trusted_ones_never() -> None:
    counter = FailureCounter(BlockPolicy(failures=3, window_s=10, trusted=parse_networks("127.0.0.1/32,10.0.0.0/8",
                                                                                         "test")))
    assert counter.failure("203.0.113.7", 0.0) is None
    assert counter.failure("203.0.113.7", 11.0) is None  # the first one left the window
    assert counter.failure("203.0.113.7", 12.0) is None
    assert counter.failure("203.0.113.7", 13.0) == 3
    assert counter.failure("203.0.113.7", 14.0) is None  # counting starts again
    assert all(counter.failure("10.1.2.3", float(t)) is None for t in range(10))
    assert all(counter.failure("127.0.0.1", float(t)) is None for t in range(10))


def test_security_event_addresses_and_trusted_networks() -> None:
    assert event_address("IPV4/UDP/127.0.0.5/5060") == "127.0.0.5"
    assert event_address("IPV6/TCP/2001:db8::7/5061") == "2001:db8::7"
    assert event_address("garbage") is None
    nets = parse_networks("::1/128, 127.0.0.1", "sip_trusted_networks")
    assert is_trusted("::1", nets) and is_trusted("127.0.0.1", nets) and not is_trusted("127.0.0.5", nets)
    with pytest.raises(FraudError, match="sip_trusted_networks: 'nope' is not an address"):
        parse_networks("10.0.0.0/8,nope", "sip_trusted_networks")


def test_the_acl_denies_each_blocked_address_as_a_host_route() -> None:
    assert acl_values(["127.0.0.9", "2001:db8::7"]) == [
        ("type", "acl"), ("deny", "0.0.0.0/32"), ("deny", "127.0.0.9/32"), ("deny", "2001:db8::7/128")]


@pytest.mark.parametrize(("env", "message"), [
    ({"CALLCTL_FRAUD_HOUR_LIMIT": "lots"}, "fraud_hour_limit: limit 'hour': 'lots' is not an amount"),
    ({"CALLCTL_FRAUD_HIGH_RISK_PREFIXES": "882,+9x"}, "fraud_high_risk_prefixes: '+9x' is not a dialling prefix"),
    ({"CALLCTL_SIP_TRUSTED_NETWORKS": "10.0.0.0/33"}, "sip_trusted_networks: '10.0.0.0/33'"),
    ({"CALLCTL_AMI_ADDRESS": "localhost"}, "ami_address 'localhost' must be HOST:PORT"),
])
def test_bad_fraud_settings_are_refused_with_one_line_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("(", r"\(")):
        load_checked_settings(env=env)  # the root checks the fraud settings with the rest


def test_default_settings_give_the_documented_policy() -> None:
    from callctl.fraud.settings import block_policy, fraud_policy

    s = Settings()
    assert fraud_policy(s).defaults == Limits()
    assert block_policy(s).failures == 5 and is_trusted("127.0.0.1", block_policy(s).trusted)
    assert dataclasses.replace(s, ami_address="").ami_address == ""


def test_the_caller_hears_why_in_the_lines_language() -> None:
    from callctl.fraud.rules import Refusal
    from callctl.fraud.service import UNAVAILABLE, announcement

    assert announcement(Refusal(PREMIUM_BARRED, "x"), "FR") == ["sound:callctl/fr/destination-barred"]
    assert announcement(Refusal(SPEND_HOUR, "x"), "GB") == ["sound:callctl/en/outbound-suspended"]
    assert announcement(Refusal("outbound_suspended", "x"), "BE") == ["sound:callctl/fr/outbound-suspended"]
    assert announcement(Refusal(UNAVAILABLE, "x"), "FR") == ["sound:cannot-complete-as-dialed"]
