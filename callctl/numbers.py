"""Phone numbers normalised to E.164 at the edge (the phonenumbers library knows every plan), and
the text of numbers as received (a SIP header, a FastAGI header, a CLI argument) made safe to store."""

from __future__ import annotations

import re

import phonenumbers

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# What a person may type in a number besides digits and one leading '+' (letters are not numbers here:
# phonenumbers would read "+1800FLOWERS" as a vanity number, a telephone switch does not).
_DIALLABLE = re.compile(r"\+?[0-9 ().\-\t]*[0-9][0-9 ().\-\t]*")
# NUL, the other C0/C1 controls, DEL and lone surrogates (text decoded with surrogateescape): none of
# them belongs in a number, and PostgreSQL refuses NUL and unpaired surrogates in text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_RAW_CHARS = 64  # a number as received is kept for the record up to this length


def e164_or_none(raw: str, country: str | None) -> str | None:
    """The E.164 form of ``raw`` dialled in ``country`` (ISO alpha-2), or None when ``raw`` is not a
    possible phone number ('+', '+abc', '+15', letters, control characters)."""
    text = raw.strip()
    if not _DIALLABLE.fullmatch(text) or (not text.startswith("+") and country is None):
        return None
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164 if _E164.fullmatch(e164) else None


def to_e164(raw: str, country: str | None) -> str:
    """E.164 form of ``raw`` dialled in ``country`` (ISO alpha-2); ``raw`` unchanged if it is not a number
    (so a raw text starting with '+' is not proof of a number: use :func:`is_e164`)."""
    text = raw.strip()
    if not text:
        return text
    return e164_or_none(text, country) or raw


def is_e164(text: str) -> bool:
    """Whether ``text`` is a number in E.164 form ('+', a country code, at most 15 digits, possible)."""
    return _E164.fullmatch(text) is not None and e164_or_none(text, None) == text


def storable(raw: str, limit: int = MAX_RAW_CHARS) -> str:
    """``raw`` (a number or caller field as received) with what PostgreSQL or a log cannot carry
    replaced by U+FFFD (NUL, control characters, lone surrogates), cut at ``limit`` characters."""
    clean = _UNSAFE.sub("\ufffd", raw)
    return clean if len(clean) <= limit else clean[:limit - 1] + "\u2026"


def mask(number: str, keep: int = 4) -> str:
    """A number for logs: all but the last ``keep`` digits hidden."""
    if len(number) <= keep:
        return number
    return "*" * (len(number) - keep) + number[-keep:]
