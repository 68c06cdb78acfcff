"""Calendar arithmetic the retention rules share (pure): whole calendar months, in UTC."""

from __future__ import annotations

import datetime as dt


def add_months(at: dt.datetime, months: int) -> dt.datetime:
    """Calendar months (negative goes back), the day clamped to the target month's last day."""
    index = at.year * 12 + (at.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - dt.timedelta(days=1)).day
    return at.replace(year=year, month=month, day=min(at.day, last_day))
