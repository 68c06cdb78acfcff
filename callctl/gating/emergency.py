"""Emergency numbers: classification by the caller's country, then allow/deny (BRIEF section 3).

Pure: no I/O. Classification needs only the caller's country and the dialled string, so it runs first,
before credit, channel limits, compliance rules or any database round trip.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from callctl.countries import Country
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


# -- Asterisk's own copy (docs/gating.md) ---------------------------------------------------------
# Each business-line endpoint carries these channel variables (PJSIP realtime `set_var`), so
# extensions.conf can route or refuse an emergency call by itself while the engine is down.
VAR_ACCOUNT = "CALLCTL_ACCOUNT"
VAR_NUMBERS = "CALLCTL_EMERGENCY_NUMBERS"  # the account country's emergency numbers, "-" separated
VAR_DECISION = "CALLCTL_EMERGENCY"  # allow | deny
VAR_RULE = "CALLCTL_EMERGENCY_RULE"
VAR_LANGUAGE = "CALLCTL_EMERGENCY_LANG"  # language of the refusal announcement
VAR_LOCATION = "CALLCTL_EMERGENCY_LOCATION"  # allowed only
VAR_CALLBACK = "CALLCTL_EMERGENCY_CALLBACK"  # allowed only: the user's DID
VAR_COUNTRY = "CALLCTL_EMERGENCY_COUNTRY"  # allowed only: the PIDF-LO civicAddress country


def endpoint_variables(account_id: str, country: Country | None, status: EmergencyStatus,
                       callback: str | None) -> dict[str, str]:
    """What Asterisk needs to decide an emergency call of this endpoint on its own (same rules as the
    engine: the numbers of the account's country, eligibility, activation, proved location)."""
    if country is None:
        verdict = Verdict(DENY, "emergency_not_offered", "the account's country is not in the country table")
        numbers = ""
    else:
        verdict = emergency_verdict(country, status)
        numbers = "-".join(country.emergency_numbers)
    language = country.language if country is not None and country.language in ("en", "fr") else "en"
    out = {VAR_ACCOUNT: account_id, VAR_NUMBERS: numbers, VAR_DECISION: verdict.decision, VAR_RULE: verdict.rule,
           VAR_LANGUAGE: language}
    if verdict.allowed:
        out[VAR_LOCATION] = " ".join((status.location or "").split())
        out[VAR_CALLBACK] = callback or ""
        out[VAR_COUNTRY] = country.code if country is not None else ""
    return out


def realtime_set_var(variables: Mapping[str, str]) -> str:
    """The ``set_var`` column of a realtime ps_endpoints row: res_config_pgsql splits a column on ';'
    into several values (one variable each) and decodes ^XX escapes, so ';' and '^' are escaped."""

    def escape(value: str) -> str:
        return value.replace("^", "^5E").replace(";", "^3B")

    return ";".join(f"{name}={escape(value)}" for name, value in variables.items())
