"""Toll-fraud rules (pure): what a destination is (country, zone, premium, satellite, high risk), which
destinations an account's permissions allow, and what its spend velocity limits say about one more call."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers

from callctl.fraud import FraudError

DOMESTIC, EUROPE, WORLD = "domestic", "europe", "world"
ZONES = (DOMESTIC, EUROPE, WORLD)
# The European zone: the EEA, Switzerland, the United Kingdom and the microstates priced like them.
EUROPE_COUNTRIES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU",
    "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO", "CH", "GB", "GG", "JE", "IM",
    "MC", "AD", "SM", "VA", "GF", "GP", "MQ", "RE", "YT"})
# Mobile satellite services: Inmarsat (+870) and the Global Mobile Satellite System (+881: Iridium,
# Globalstar, Thuraya's 8821x is in +882, listed as high risk below).
SATELLITE_PREFIXES = ("870", "881")
# Destinations of international revenue share fraud (IRSF) most often seen in carriers' fraud reports:
# international networks (+882, +883), international premium rate (+979), and small networks whose
# termination rates make them the usual targets. Operators replace the list in the settings.
DEFAULT_HIGH_RISK_PREFIXES = ("882", "883", "979", "53", "220", "224", "231", "232", "235", "239", "245",
                              "246", "247", "252", "269", "290", "674", "682", "683", "688", "690")

# Rule slugs: stable, in CDRs (disposition FRAUD_<RULE>), logs, the FastAGI gate and the CLI.
PREMIUM_BARRED = "destination_premium_barred"
SATELLITE_BARRED = "destination_satellite_barred"
HIGH_RISK_BARRED = "destination_high_risk_barred"
COUNTRY_BARRED = "destination_country_barred"
ZONE_BARRED = "destination_zone_barred"
SUSPENDED = "outbound_suspended"
SPEND_HOUR = "spend_hour_limit"
SPEND_DAY = "spend_day_limit"
CALLS_PER_MINUTE = "calls_per_minute_limit"
INTERNATIONAL_CALLS = "international_calls_limit"

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PREFIX = re.compile(r"^[0-9]{1,15}$")


@dataclass(frozen=True)
class Refusal:
    """Why a call may not leave: ``rule`` a stable slug, ``reason`` a sentence for people."""

    rule: str
    reason: str

    @property
    def disposition(self) -> str:
        """The CDR disposition naming the rule."""
        return "FRAUD_" + self.rule.upper()


@dataclass(frozen=True)
class Destination:
    number: str  # E.164
    country: str | None  # ISO alpha-2; None for non-geographic codes (+870, +882 ...)
    zone: str
    premium: bool
    satellite: bool
    high_risk: bool
    international: bool


def parse_prefixes(text: str, where: str) -> tuple[str, ...]:
    """'882, 883,+979' -> ('882', '883', '979'); a bad entry is a FraudError naming ``where``."""
    out = []
    for raw in text.split(","):
        entry = raw.strip().lstrip("+")
        if not entry:
            continue
        if not _PREFIX.match(entry):
            raise FraudError(f"{where}: '{raw.strip()}' is not a dialling prefix (digits of E.164, e.g. 882)")
        out.append(entry)
    return tuple(out)


def classify(e164: str, account_country: str, high_risk_prefixes: Iterable[str] = DEFAULT_HIGH_RISK_PREFIXES
             ) -> Destination:
    """What ``e164`` is, seen from an account in ``account_country``."""
    digits = e164.lstrip("+")
    country: str | None = None
    premium = False
    try:
        parsed = phonenumbers.parse(e164, None)
        region = phonenumbers.region_code_for_number(parsed)
        country = region if region and _COUNTRY.match(region) else None
        premium = phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.PREMIUM_RATE
    except phonenumbers.NumberParseException:
        pass
    home = account_country.strip().upper()
    if country == home:
        zone = DOMESTIC
    elif country in EUROPE_COUNTRIES:
        zone = EUROPE
    else:
        zone = WORLD
    return Destination(
        number=e164, country=country, zone=zone, premium=premium or digits.startswith("979"),
        satellite=digits.startswith(SATELLITE_PREFIXES),
        high_risk=any(digits.startswith(p) for p in high_risk_prefixes),
        international=country != home)


@dataclass(frozen=True)
class Permissions:
    """Which destinations may be called. New accounts get the defaults: every country and zone, but no
    premium-rate, satellite or high-risk destination."""

    countries: frozenset[str] | None = None  # None: every country (subject to zones and deny_countries)
    deny_countries: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset(ZONES)
    premium: bool = False
    satellite: bool = False
    high_risk: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"countries": None if self.countries is None else sorted(self.countries),
                "deny_countries": sorted(self.deny_countries), "zones": [z for z in ZONES if z in self.zones],
                "premium": self.premium, "satellite": self.satellite, "high_risk": self.high_risk}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Permissions:
        countries = data.get("countries")
        return cls(countries=None if countries is None else frozenset(countries),
                   deny_countries=frozenset(data.get("deny_countries") or ()),
                   zones=frozenset(data.get("zones", ZONES)), premium=bool(data.get("premium", False)),
                   satellite=bool(data.get("satellite", False)), high_risk=bool(data.get("high_risk", False)))

    def changed(self, **changes: Any) -> Permissions:
        """A copy with ``changes`` (only the keys given), validated."""
        for key in ("countries", "deny_countries"):
            if changes.get(key) is not None:
                changes[key] = countries_of(changes[key], f"--{key.replace('_', '-')}")
        if changes.get("zones") is not None:
            changes["zones"] = zones_of(changes["zones"])
        return replace(self, **changes)


DEFAULT_PERMISSIONS = Permissions()


def countries_of(values: Iterable[str], where: str) -> frozenset[str]:
    out = set()
    for raw in values:
        code = raw.strip().upper()
        if not _COUNTRY.match(code) or code not in phonenumbers.SUPPORTED_REGIONS:
            raise FraudError(f"{where}: '{raw}' is not an ISO 3166 alpha-2 country with a numbering plan "
                             "(e.g. FR, GB, US)")
        out.add(code)
    return frozenset(out)


def zones_of(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for raw in values:
        zone = raw.strip().lower()
        if zone not in ZONES:
            raise FraudError(f"--zones: unknown zone '{raw}' (known: {', '.join(ZONES)})")
        out.add(zone)
    return frozenset(out)


def permission_refusal(perms: Permissions, dest: Destination) -> Refusal | None:
    """The first permission ``dest`` lacks, or None. Specific categories first, so the reason is precise."""
    where = dest.country or f"+{dest.number.lstrip('+')[:3]}"
    if dest.premium and not perms.premium:
        return Refusal(PREMIUM_BARRED, f"{dest.number} is a premium-rate number and premium-rate destinations "
                                       "are not enabled for this account")
    if dest.satellite and not perms.satellite:
        return Refusal(SATELLITE_BARRED, f"{dest.number} is a satellite network number and satellite "
                                         "destinations are not enabled for this account")
    if dest.high_risk and not perms.high_risk:
        return Refusal(HIGH_RISK_BARRED, f"{dest.number} ({where}) is on the high-risk destination list and "
                                         "high-risk destinations are not enabled for this account")
    if dest.country is not None and dest.country in perms.deny_countries:
        return Refusal(COUNTRY_BARRED, f"calls to {dest.country} are barred for this account")
    if perms.countries is not None and (dest.country is None or dest.country not in perms.countries):
        return Refusal(COUNTRY_BARRED, f"calls to {where} are not in this account's allowed countries "
                                       f"({', '.join(sorted(perms.countries)) or 'none'})")
    if dest.zone not in perms.zones:
        return Refusal(ZONE_BARRED, f"calls to the {dest.zone} zone ({where}) are not enabled for this account")
    return None


@dataclass(frozen=True)
class Limits:
    """Spend velocity limits of one account; money in the account's currency. Reaching a limit suspends
    the account's outbound calls; ``warn_percent`` of it sends a warning."""

    hour: Decimal = Decimal("200")
    day: Decimal = Decimal("1000")
    calls_per_minute: int = 30
    international_calls: int = 10
    warn_percent: int = 80

    def to_json(self) -> dict[str, Any]:
        return {"hour": str(self.hour), "day": str(self.day), "calls_per_minute": self.calls_per_minute,
                "international_calls": self.international_calls, "warn_percent": self.warn_percent}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: Limits | None = None) -> Limits:
        base = base or cls()
        return base.changed(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def changed(self, **changes: Any) -> Limits:
        """A copy with ``changes`` (None values ignored), each validated with a message naming it."""
        values: dict[str, Any] = {}
        for key, raw in changes.items():
            if raw is None:
                continue
            if key in ("hour", "day"):
                try:
                    money = Decimal(str(raw))
                except InvalidOperation:
                    raise FraudError(f"limit '{key}': '{raw}' is not an amount (e.g. 50 or 12.50)") from None
                if not money.is_finite() or money <= 0:
                    raise FraudError(f"limit '{key}': {raw} must be a positive amount")
                values[key] = money
            else:
                try:
                    number = int(raw)
                except (TypeError, ValueError):
                    raise FraudError(f"limit '{key}': '{raw}' is not a whole number") from None
                low, high = (1, 100) if key == "warn_percent" else (1, 100000)
                if not low <= number <= high:
                    raise FraudError(f"limit '{key}': {number} must be between {low} and {high}")
                values[key] = number
        return replace(self, **values)


@dataclass(frozen=True)
class Usage:
    """What the account used before this call, counted since the last release of a suspension."""

    spent_hour: Decimal = Decimal(0)  # costs settled in the last hour + what calls still up can spend in one
    spent_day: Decimal = Decimal(0)
    calls_last_minute: int = 0  # calls admitted in the last 60 s
    international_open: int = 0  # international calls admitted and not ended
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Threshold:
    """A warning: a limit's ``warn_percent`` was reached (``window`` names its period for de-duplication)."""

    rule: str
    reason: str
    window: str  # hour | day | minute


def velocity(limits: Limits, usage: Usage, *, own_hold: Decimal, international: bool,
             currency: str) -> tuple[Refusal | None, list[Threshold]]:
    """The hard limit this call would break (it suspends the account), and the warnings it reaches.

    The money rule admits a call while what was spent and held before it stays under the limit, so the
    money of a window never exceeds the limit plus one call's hold."""
    if usage.spent_hour >= limits.hour:
        return Refusal(SPEND_HOUR, f"{usage.spent_hour} {currency} spent or held in the last hour reached the "
                                   f"limit of {limits.hour} {currency}"), []
    if usage.spent_day >= limits.day:
        return Refusal(SPEND_DAY, f"{usage.spent_day} {currency} spent or held in the last 24 hours reached the "
                                  f"limit of {limits.day} {currency}"), []
    if usage.calls_last_minute >= limits.calls_per_minute:
        return Refusal(CALLS_PER_MINUTE, f"{usage.calls_last_minute} calls in the last minute reached the limit "
                                         f"of {limits.calls_per_minute}"), []
    if international and usage.international_open >= limits.international_calls:
        return Refusal(INTERNATIONAL_CALLS, f"{usage.international_open} international calls in progress reached "
                                            f"the limit of {limits.international_calls}"), []
    warnings = []
    ratio = Decimal(limits.warn_percent) / 100
    if usage.spent_hour + own_hold >= limits.hour * ratio:
        warnings.append(Threshold(SPEND_HOUR, f"{usage.spent_hour + own_hold} {currency} spent or held in the "
                                              f"last hour: {limits.warn_percent} % of the limit of {limits.hour} "
                                              f"{currency}", "hour"))
    if usage.spent_day + own_hold >= limits.day * ratio:
        warnings.append(Threshold(SPEND_DAY, f"{usage.spent_day + own_hold} {currency} spent or held in the last "
                                             f"24 hours: {limits.warn_percent} % of the limit of {limits.day} "
                                             f"{currency}", "day"))
    if usage.calls_last_minute + 1 >= limits.calls_per_minute * ratio:
        warnings.append(Threshold(CALLS_PER_MINUTE, f"{usage.calls_last_minute + 1} calls in the last minute: "
                                                    f"{limits.warn_percent} % of the limit of "
                                                    f"{limits.calls_per_minute}", "minute"))
    if international and usage.international_open + 1 >= limits.international_calls * ratio:
        warnings.append(Threshold(INTERNATIONAL_CALLS, f"{usage.international_open + 1} international calls in "
                                                       f"progress: {limits.warn_percent} % of the limit of "
                                                       f"{limits.international_calls}", "hour"))
    return None, warnings


@dataclass(frozen=True)
class FraudPolicy:
    """Operator settings: the limits of accounts that set none, and the high-risk destination list."""

    defaults: Limits = field(default_factory=Limits)
    high_risk_prefixes: tuple[str, ...] = DEFAULT_HIGH_RISK_PREFIXES
