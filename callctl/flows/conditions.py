"""What a ``when`` step answers for a moment: its time window, calendars, closed days and switch,
each with the reason ``simulate`` prints. Pure: the switch's state is read by the caller."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

from callctl.flows.calendars import BUILTIN_CALENDAR, PUBLIC_HOLIDAYS
from callctl.flows.model import Dialplan, When


def when_answer(step: When, plan: Dialplan, country_code: str, now: dt.datetime,
                switch: tuple[bool, str] | None) -> tuple[bool, str]:
    """(inside, why): inside when every condition the step gives holds. ``now`` is aware; the
    local time is the step's time zone, else the number's country's. ``switch``: (on, how said)."""
    country = plan.countries.get(country_code)
    tz_name = step.timezone or (country.timezone if country else "UTC")
    local = now.astimezone(zoneinfo.ZoneInfo(tz_name))
    reasons: list[str] = []
    inside = True
    if step.window_name:
        window = step.window if step.window is not None else (country.canvassing if country else None)
        in_window = window is not None and window.contains(local)
        reasons.append(f"{local:%a %H:%M} {tz_name} is {'inside' if in_window else 'outside'} {step.window_name}")
        inside = in_window
    day = local.date()
    if step.calendars or step.dates:
        span = next((d for d in step.dates if d.contains(day)), None)
        why = closed_why(plan, step.calendars, day, country_code) or (span.text if span else None)
        listed = ", ".join([*step.calendars, *(d.text for d in step.dates)])
        reasons.append(f"{day} is {why}" if why else f"{day} is in none of {listed}")
        inside = inside and why is not None
    if step.closed_on:
        why = closed_why(plan, step.closed_on, day, country_code)
        reasons.append(f"{day} is closed: {why}" if why else f"{day} is not in {', '.join(step.closed_on)}")
        inside = inside and why is None
    if switch is not None:
        on, said = switch
        reasons.append(f"switch '{step.switch}' is {said}")
        inside = inside and on
    return inside, "; ".join(reasons) + f": {'inside' if inside else 'outside'}"


def closed_why(plan: Dialplan, names: Sequence[str], day: dt.date, country_code: str) -> str | None:
    """Why ``day`` is in one of the calendars ``names`` ("holidays" built in), or None."""
    for name in names:
        calendar = BUILTIN_CALENDAR if name == PUBLIC_HOLIDAYS else plan.calendars.get(name)
        why = calendar.closed(day, country_code) if calendar is not None else None
        if why is not None:
            return why
    return None
