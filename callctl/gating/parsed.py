"""Numbers parsed once per distinct text: bounded caches (LRU) of phonenumbers results on the gate's
decision path (issue 17). Parsing one number costs ~40 us of Python; a FastAGI gate serving thousands
of calls a second sees the same caller ids (an operator's own numbers) and often the same destinations.
The functions are pure (same text, same country: same answer), so a cache needs no invalidation; its
bound keeps garbage input from growing it (docs/gating.md)."""

from __future__ import annotations

import functools

import phonenumbers

from callctl.numbers import MAX_RAW_CHARS, e164_or_none, to_e164

CACHE_SIZE = 4096  # entries per cache: a few hundred bytes each, ~1-2 MiB at most
# Texts longer than a number as received is kept are parsed each time, never kept: an 8 KiB caller
# header must not make an entry 8 KiB (the bound of a cache is its entries times their size).
MAX_CACHED_CHARS = MAX_RAW_CHARS


def cacheable(*texts: str | None) -> bool:
    """Whether a result keyed by these texts (a number, a country as received) may be kept."""
    return all(text is None or len(text) <= MAX_CACHED_CHARS for text in texts)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _e164(raw: str, country: str | None) -> str | None:
    return e164_or_none(raw, country)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _e164_or_raw(raw: str, country: str | None) -> str:
    return to_e164(raw, country)


def e164(raw: str, country: str | None) -> str | None:
    """:func:`callctl.numbers.e164_or_none`, cached for texts of at most ``MAX_CACHED_CHARS``."""
    return _e164(raw, country) if cacheable(raw, country) else e164_or_none(raw, country)


def e164_or_raw(raw: str, country: str | None) -> str:
    """:func:`callctl.numbers.to_e164`, cached likewise (the caller of a decision's CDR)."""
    return _e164_or_raw(raw, country) if cacheable(raw, country) else to_e164(raw, country)


def region(number: str) -> str | None:
    """The ISO region of an E.164 number (phonenumbers' region_code_for_number), None if unparsable;
    cached for texts of at most ``MAX_CACHED_CHARS``."""
    return _region(number) if cacheable(number) else _region.__wrapped__(number)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _region(number: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
