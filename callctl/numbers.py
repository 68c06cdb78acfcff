"""Phone numbers normalised to E.164 at the edge (the phonenumbers library knows every plan)."""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str, country: str | None) -> str:
    """E.164 form of ``raw`` dialled in ``country`` (ISO alpha-2); ``raw`` unchanged if it is not a number."""
    text = raw.strip()
    if not text:
        return text
    if not text.startswith("+") and country is None:
        return raw
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else country)
    except phonenumbers.NumberParseException:
        return raw
    if not phonenumbers.is_possible_number(parsed):
        return raw
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(number: str, keep: int = 4) -> str:
    """A number for logs: all but the last ``keep`` digits hidden."""
    if len(number) <= keep:
        return number
    return "*" * (len(number) - keep) + number[-keep:]
