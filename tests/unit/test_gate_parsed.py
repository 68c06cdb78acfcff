"""The gate's bounded caches of phonenumbers results (issue 17, second round): same answers as the
uncached functions, and a bound that garbage input cannot grow past."""

from __future__ import annotations

from callctl.agi.gate import _destination
from callctl.fraud.rules import DEFAULT_HIGH_RISK_PREFIXES, classify
from callctl.gating import parsed
from callctl.numbers import e164_or_none, to_e164

SAMPLES = ["0123456789", "+33123456789", "  01 23 45 67 89 ", "+1 (212) 555-0100", "15", "+", "+abc",
           "+1800FLOWERS", "\x00123", "", "0033123456789", "+882123456789", "+97912345678"]


def test_cached_parses_answer_as_the_uncached_functions() -> None:
    for raw in SAMPLES:
        for country in ("FR", "GB", "US", None):
            assert parsed.e164(raw, country) == e164_or_none(raw, country), (raw, country)
            assert parsed.e164(raw, country) == e164_or_none(raw, country), (raw, country)  # from the cache
            assert parsed.e164_or_raw(raw, country) == to_e164(raw, country), (raw, country)


def test_the_region_and_the_fraud_classification_are_the_uncached_ones() -> None:
    assert parsed.region("+33123456789") == "FR"
    assert parsed.region("+12125550100") == "US"
    assert parsed.region("garbage") is None
    for number in ("+33123456789", "+12125550100", "+882123456789", "+97912345678", "+33899123456"):
        for country in ("FR", "DE"):
            expected = classify(number, country, DEFAULT_HIGH_RISK_PREFIXES)
            assert _destination(number, country, DEFAULT_HIGH_RISK_PREFIXES) == expected
            assert _destination(number, country, DEFAULT_HIGH_RISK_PREFIXES) == expected


def test_the_caches_are_bounded() -> None:
    for i in range(parsed.CACHE_SIZE + 500):
        parsed.e164(f"+3312{i:07d}", None)
        parsed.e164_or_raw(f"garbage {i}", "FR")
    assert parsed._e164.cache_info().currsize == parsed.CACHE_SIZE
    assert parsed._e164_or_raw.cache_info().currsize == parsed.CACHE_SIZE
    assert parsed.e164("+33120000001", None) == "+33120000001"


def test_a_long_text_is_parsed_but_never_kept() -> None:
    """A caller header may be 8 KiB: kept 4,096 times that would be 32 MiB, so it is not kept."""
    long_caller = "x" * 8000
    before = parsed._e164_or_raw.cache_info()
    assert parsed.e164_or_raw(long_caller, "FR") == to_e164(long_caller, "FR")
    assert parsed.e164(" " * 100 + "0123456789", "FR") == "+33123456789"
    assert parsed.region("+" + "3" * 100) is None
    assert parsed.e164("+33123456789", "F" * 100) == "+33123456789"  # a country from the AGI URL
    after = parsed._e164_or_raw.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)
