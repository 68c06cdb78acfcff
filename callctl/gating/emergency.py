"""Emergency numbers: classification by the caller's country, then allow/deny (BRIEF section 3).

Pure: no I/O. Classification needs only the caller's country and the dialled string, so it runs first,
before credit, channel limits, compliance rules or any database round trip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from callctl.flows.model import Country
from callctl.gating import ALLOW, DENY, Verdict

_SEPARATORS = str.maketrans("", "", " -.()\t")


@dataclass(frozen=True)
class EmergencyStatus:
    """An account's emergency activation: the location is proved when ``verified_at`` is set."""

    enabled: bool
    location: str | None
    verified_at: dt.datetime | None

    @property
    def location_verified(self) -> bool:
        return self.verified_at is not None and bool(self.location)


NOT_ACTIVATED = EmergencyStatus(enabled=False, location=None, verified_at=None)


def dialled_digits(dialled: str) -> str:
    """The dialled string without the separators people type ("1 12" is 112)."""
    return dialled.strip().translate(_SEPARATORS)


def emergency_number(countries: Mapping[str, Country], caller_country: str, dialled: str) -> str | None:
    """The emergency number dialled, or None. Exact match in the caller's country only: "15" is an
    emergency number from France and nothing from the UK; "1120" in Germany is not 112."""
    country = countries.get(caller_country.strip().upper())
    if country is None:
        return None
    digits = dialled_digits(dialled)
    return digits if digits in country.emergency_numbers else None


def emergency_verdict(country: Country, status: EmergencyStatus) -> Verdict:
    """Allowed only if the country is eligible, the account enabled it, and its location is proved."""
    if not country.offered or not country.emergency_eligible:
        return Verdict(DENY, "emergency_not_offered",
                       f"emergency calling is not offered in {country.name} ({country.code})")
    if not status.enabled:
        return Verdict(DENY, "emergency_not_enabled", "emergency calling is not activated on this account")
    if not status.location_verified:
        return Verdict(DENY, "emergency_location_unverified",
                       "the account's location has not been proved; emergency calling stays off until it is")
    return Verdict(ALLOW, "emergency_allowed", "emergency call routed to the emergency trunk with the location on file")
