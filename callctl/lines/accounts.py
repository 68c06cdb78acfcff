"""Account and SIP user rules (pure): options of an account, SIP credentials, number checks.

No I/O here: the store (callctl/store/lines.py) persists what these rules accept.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

import phonenumbers

from callctl.errors import LineError as LineError  # in the one tree (callctl.errors)
from callctl.numbers import is_e164

CURRENCIES = ("EUR", "CHF", "GBP")
# Countries whose default currency is not the euro; every other country defaults to EUR.
_DEFAULT_CURRENCY = {"CH": "CHF", "LI": "CHF", "GB": "GBP", "GG": "GBP", "JE": "GBP", "IM": "GBP"}
DEFAULT_PLAN = "payg"
MAX_EXTRA_CHANNELS = 1000
_PLAN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PASSWORD_BYTES = 18  # 24 URL-safe characters, ~144 bits


@dataclass(frozen=True)
class AccountOptions:
    """What an account bought; validated by ``account_options``."""

    country: str
    currency: str
    plan: str = DEFAULT_PLAN
    extra_channels: int = 0
    recording: bool = False

    @property
    def channel_limit(self) -> int:
        """Simultaneous calls allowed per user: one, plus the channels bought."""
        return 1 + self.extra_channels


def default_currency(country: str) -> str:
    return _DEFAULT_CURRENCY.get(country.upper(), "EUR")


def account_options(*, country: str, currency: str | None = None, plan: str | None = None,
                    extra_channels: int = 0, recording: bool = False) -> AccountOptions:
    """Validated options; ``currency`` defaults by country, ``plan`` to 'payg'."""
    cc = country.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", cc) or cc not in phonenumbers.SUPPORTED_REGIONS:
        raise LineError(f"country {country!r} is not an ISO 3166 alpha-2 code with a numbering plan "
                        "(e.g. FR, CH, GB)")
    cur = (currency or default_currency(cc)).strip().upper()
    if cur not in CURRENCIES:
        raise LineError(f"currency {currency!r} is not offered (choose one of {', '.join(CURRENCIES)})")
    plan_name = DEFAULT_PLAN if plan is None else plan.strip()
    if not _PLAN.fullmatch(plan_name):
        raise LineError(f"plan {plan!r} must be 1-32 characters: lower-case letters, digits, '-' or '_'")
    if isinstance(extra_channels, bool) or not 0 <= extra_channels <= MAX_EXTRA_CHANNELS:
        raise LineError(f"extra channels {extra_channels!r} must be a whole number from 0 to {MAX_EXTRA_CHANNELS}")
    return AccountOptions(cc, cur, plan_name, extra_channels, bool(recording))


def require_name(name: str, what: str) -> str:
    text = name.strip()
    if not text:
        raise LineError(f"{what} name must not be empty")
    if len(text) > 200:
        raise LineError(f"{what} name is longer than 200 characters")
    return text


def require_e164(number: str, what: str = "number") -> str:
    """``number`` if it is E.164 (callctl.numbers.is_e164); callers normalise with callctl.numbers first."""
    if not is_e164(number):
        raise LineError(f"{what} {number!r} is not a phone number in E.164 form (e.g. +33123456789); "
                        "national numbers are read in the account's country")
    return number


def sip_username_for(user_id: uuid.UUID) -> str:
    """The SIP user name (endpoint, auth and AOR id) of a user: stable, unique, no personal data."""
    return "u" + user_id.hex[:15]


def new_sip_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)
