"""Numbers parsed once per distinct text: bounded caches (LRU) of phonenumbers results on the gate's
decision path (issue 17). Parsing one number costs ~40 us of Python; a FastAGI gate serving thousands
of calls a second sees the same caller ids (an operator's own numbers) and often the same destinations.
The functions are pure (same text, same country: same answer), so a cache needs no invalidation; its
bound keeps garbage input from growing it (docs/gating.md)."""

from __future__ import annotations

import functools

import phonenumbers

from callctl.numbers import e164_or_none, to_e164

CACHE_SIZE = 4096  # entries per cache: a few hundred bytes each, ~1-2 MiB at most


@functools.lru_cache(maxsize=CACHE_SIZE)
def e164(raw: str, country: str | None) -> str | None:
    """:func:`callctl.numbers.e164_or_none`, cached."""
    return e164_or_none(raw, country)


@functools.lru_cache(maxsize=CACHE_SIZE)
def e164_or_raw(raw: str, country: str | None) -> str:
    """:func:`callctl.numbers.to_e164`, cached (the caller of a decision's CDR)."""
    return to_e164(raw, country)


@functools.lru_cache(maxsize=CACHE_SIZE)
def region(number: str) -> str | None:
    """The ISO region of an E.164 number (phonenumbers' region_code_for_number), None if unparsable."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
