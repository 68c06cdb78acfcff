"""Phone numbers as operators write them in the dialplan: E.164 or a problem that says how to
write it ("0123456789" -> "+33123456789" for France)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers

E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SEPARATORS = re.compile(r"[\s.\-()/]")


def e164_problem(text: str, countries: Iterable[str]) -> str | None:
    """None when ``text`` is a possible E.164 number; else what is wrong and the E.164 form when
    it can be guessed (``countries``: ISO codes to read a national number in, most likely first)."""
    if E164_RE.match(text):
        try:
            parsed = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            return "is not a phone number"
        if not phonenumbers.is_possible_number(parsed):
            return "has too few or too many digits for its country code"
        return None
    compact = _SEPARATORS.sub("", text)
    if E164_RE.match(compact):
        return f"is not E.164 (no spaces or punctuation): write \"{compact}\""
    for code in countries:
        try:
            parsed = phonenumbers.parse(compact, code)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            return (f"is a national number: write it in E.164, \"{e164}\" if it is in {code} (+, the country "
                    "code, then the number without its leading 0)")
    return "is not E.164: write + then the country code and the number, no spaces, e.g. \"+33123456789\""
