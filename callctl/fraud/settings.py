"""The fraud part of the settings, validated at load time: velocity defaults, high-risk list, SIP blocking."""

from __future__ import annotations

from typing import Any

from callctl.fraud import FraudError
from callctl.fraud.bruteforce import BlockPolicy, parse_networks
from callctl.fraud.rules import FraudPolicy, Limits, parse_prefixes


def fraud_policy(s: Any) -> FraudPolicy:
    limits = Limits()
    for key, setting in (("hour", "fraud_hour_limit"), ("day", "fraud_day_limit"),
                         ("calls_per_minute", "fraud_calls_per_minute"),
                         ("international_calls", "fraud_international_calls"), ("warn_percent", "fraud_warn_percent")):
        try:
            limits = limits.changed(**{key: getattr(s, setting)})
        except FraudError as exc:
            raise FraudError(f"{setting}: {exc.message}") from None
    return FraudPolicy(limits, parse_prefixes(s.fraud_high_risk_prefixes, "fraud_high_risk_prefixes"))


def block_policy(s: Any) -> BlockPolicy:
    if s.sip_block_failures < 1:
        raise FraudError("sip_block_failures must be at least 1")
    if s.sip_block_window_s <= 0 or s.sip_block_s <= 0 or s.sip_block_max_s < s.sip_block_s:
        raise FraudError("sip_block_window_s and sip_block_s must be positive, sip_block_max_s at least sip_block_s")
    return BlockPolicy(s.sip_block_failures, s.sip_block_window_s, s.sip_block_s, s.sip_block_max_s,
                       parse_networks(s.sip_trusted_networks, "sip_trusted_networks"))


def settings_problem(s: Any) -> str | None:
    """One line naming the bad fraud setting, or None."""
    try:
        fraud_policy(s)
        block_policy(s)
    except FraudError as exc:
        return exc.message
    if s.ami_address and not s.ami_address.rpartition(":")[2].isdigit():
        return f"ami_address '{s.ami_address}' must be HOST:PORT (or empty: no SIP brute-force blocking)"
    return None
