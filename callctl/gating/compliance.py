"""Outbound dialer compliance (BRIEF section 5): canvassing windows, caller ID, banned sectors, caps.

Pure: no I/O. Windows come from the country table (``canvassing`` in dialplan/countries.yaml), in the
callee country's local time; public holidays come from the ``holidays`` package.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import holidays

from callctl.countries import Country
from callctl.gating import ALLOW, DENY, Verdict

MAX_CALLS_PER_CALLEE = 4
CAP_WINDOW = dt.timedelta(days=30)
PENALTY_EUR = Decimal("0.02")  # per illegitimate attempt (operator's tariff)
SHORT_CALL_S = 60
# Sectors barred from cold calling outright (French law: energy renovation, personal training accounts).
BANNED_SECTORS = frozenset({"energy_renovation", "training_accounts"})
# Since 2023 French mobile numbers (06 / 07) may not be presented by automated calls.
_FRENCH_MOBILE = re.compile(r"^(\+33|0033|0)[67][0-9]{8}$")

ALLOWED = Verdict(ALLOW, "compliant", "automated call within every dialer rule")


def is_french_mobile(number: str) -> bool:
    return bool(_FRENCH_MOBILE.match("".join(number.split())))


def caller_id_verdict(from_e164: str) -> Verdict | None:
    if is_french_mobile(from_e164):
        return Verdict(DENY, "mobile_caller_id",
                       "automated calls may not present a French mobile number (06/07) as caller ID")
    return None


def sector_verdict(sector: str | None) -> Verdict | None:
    if sector is not None and sector in BANNED_SECTORS:
        return Verdict(DENY, "banned_sector", f"the sector '{sector}' is barred from cold calling")
    return None


@functools.lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


def holiday_name(country: str, day: dt.date) -> str | None:
    try:
        name = _holidays(country, day.year).get(day)
    except NotImplementedError:  # a country the package does not know: no holidays
        return None
    return None if name is None else str(name)


def window_verdict(country: Country, at: dt.datetime) -> Verdict | None:
    """None when ``at`` (aware) is inside the country's canvassing hours; a refusal otherwise."""
    window = country.canvassing
    if window is None:
        return None
    if at.tzinfo is None:
        raise ValueError("canvassing windows need an aware datetime")
    local = at.astimezone(ZoneInfo(country.timezone))
    holiday = holiday_name(country.code, local.date())
    stamp = local.strftime("%a %Y-%m-%d %H:%M:%S") + f" {country.timezone}"
    if holiday is not None:
        return Verdict(DENY, "canvassing_holiday", f"{stamp} is a public holiday in {country.code} ({holiday})")
    if not window.contains(local):
        spans = ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in window.hours) or "all day"
        return Verdict(DENY, "canvassing_hours", f"{stamp} is outside canvassing hours ({spans}, "
                                                 f"days {','.join(str(d) for d in sorted(window.days))})")
    return None


def cap_verdict(previous_calls: int) -> Verdict | None:
    """``previous_calls``: allowed calls to this callee by this account in the last 30 days."""
    if previous_calls >= MAX_CALLS_PER_CALLEE:
        return Verdict(DENY, "callee_cap", f"{previous_calls} calls to this number in the last 30 days "
                                           f"(at most {MAX_CALLS_PER_CALLEE})")
    return None


def optout_verdict(listed: bool, exception: str | None, version: int | None) -> Verdict | None:
    if listed and exception is None:
        return Verdict(DENY, "optout_listed", f"the callee is on the opposition list (version {version})")
    return None


def penalty_eur(illegitimate_attempts: int, per_attempt: Decimal = PENALTY_EUR) -> Decimal:
    return (per_attempt * illegitimate_attempts).quantize(Decimal("0.01"))
