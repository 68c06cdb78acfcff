"""Country rows as the engine knows them (countries.yaml): time zone, default language, whether
the service is offered, emergency eligibility and numbers, canvassing hours.

Core and pure: gating, AGI and the store use it without importing the flow language.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class TimeWindow:
    """Weekdays (0 = Monday) and local [start, end) time ranges, in a named time zone."""

    days: frozenset[int]
    hours: tuple[tuple[dt.time, dt.time], ...]

    def contains(self, local: dt.datetime) -> bool:
        if local.weekday() not in self.days:
            return False
        now = local.time().replace(tzinfo=None)
        return not self.hours or any(start <= now < end for start, end in self.hours)


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    timezone: str
    language: str
    offered: bool
    emergency_eligible: bool
    emergency_numbers: tuple[str, ...]
    canvassing: TimeWindow | None
