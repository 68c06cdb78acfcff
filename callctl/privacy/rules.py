"""Pure privacy rules: pseudonyms, retention dates and what a pseudonymised CDR keeps for rating."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from callctl.clock import add_months
from callctl.numbers import is_e164

PSEUDO_PREFIX = "pseudo:"
BILLING_RETENTION_MONTHS = 12  # BRIEF section 4: CDRs are the proof of use for 12 months
SUSPENSION_GRACE_MONTHS = 1  # BRIEF section 6: a suspended account's data goes one month after
RATING_PREFIX_DIGITS = 5  # digits of a pseudonymised number kept so the leg can still be rated


def pseudonym(secret: bytes, value: str) -> str:
    """A stable stand-in for ``value``: the same value always maps to the same pseudonym under one
    installation's secret, and the value cannot be recovered from it."""
    digest = hmac.new(secret, value.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDO_PREFIX + digest[:32]


def is_pseudonym(value: str | None) -> bool:
    return value is not None and value.startswith(PSEUDO_PREFIX)


def billing_cutoff(now: dt.datetime) -> dt.datetime:
    """CDRs started at or after this instant are still within their billing retention."""
    return add_months(now, -BILLING_RETENTION_MONTHS)


def purge_due(suspended_at: dt.datetime, now: dt.datetime) -> bool:
    """True once an account has been suspended for more than one month."""
    return now > add_months(suspended_at, SUSPENSION_GRACE_MONTHS)



def rating_prefix(number: str) -> str:
    """What billing keeps of a pseudonymised E.164 number: the country code and the first national
    digits, enough to pick a rate and a zone, not enough to call anyone."""
    if not is_e164(number):
        return ""
    return number[: 1 + RATING_PREFIX_DIGITS]
