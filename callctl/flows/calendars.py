"""Closure calendars of the dialplan: public holidays per country (the ``holidays`` package),
explicit dates and date ranges (once, or every year), named so operators edit them in one place.

Pure: no I/O. ``holidays`` computes the days from rules, per country and year (cached).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import holidays

PUBLIC_HOLIDAYS = "holidays"  # the built-in calendar: public holidays of the number's country


@functools.cache
def _country_days(code: str, year: int) -> dict[dt.date, str]:
    return dict(holidays.country_holidays(code, years=year).items())


def holiday_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


def public_holiday(code: str, day: dt.date) -> str | None:
    """The name of ``day`` if it is a public holiday in country ``code`` (ISO alpha-2)."""
    if code not in holiday_countries():
        return None
    return _country_days(code, day.year).get(day)


@dataclass(frozen=True)
class DateRange:
    """``first``..``last`` inclusive; ``yearly``: the years are ignored (12-24..12-26 every year)."""

    first: dt.date
    last: dt.date
    yearly: bool = False
    text: str = ""

    def contains(self, day: dt.date) -> bool:
        if not self.yearly:
            return self.first <= day <= self.last
        key = (day.month, day.day)
        lo, hi = (self.first.month, self.first.day), (self.last.month, self.last.day)
        return lo <= key <= hi if lo <= hi else key >= lo or key <= hi  # 12-31..01-02 wraps


@dataclass(frozen=True)
class Calendar:
    """A named set of closed days: public holidays of ``countries`` ("" = the number's country)
    and explicit ``dates``."""

    name: str
    countries: tuple[str, ...] = ()
    dates: tuple[DateRange, ...] = ()

    def closed(self, day: dt.date, number_country: str) -> str | None:
        """Why ``day`` is in this calendar ("Labor Day (public holiday FR)"), or None."""
        for code in self.countries:
            code = code or number_country
            name = public_holiday(code, day)
            if name is not None:
                return f"{name} (public holiday {code})"
        for span in self.dates:
            if span.contains(day):
                return f"{span.text} ({self.name})" if self.name != PUBLIC_HOLIDAYS else span.text
        return None


BUILTIN_CALENDAR = Calendar(name=PUBLIC_HOLIDAYS, countries=("",))
