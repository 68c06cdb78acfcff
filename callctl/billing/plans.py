"""Plans (pure): loaded once from billing/plans.yaml into frozen objects; what a plan includes,
trial limits, VAT by country. Every file error carries FILE:LINE:COL."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import phonenumbers
import yaml

from callctl.billing.rating import Rate
from callctl.errors import ConfigError

DEFAULT_PLANS_FILE = Path(__file__).resolve().parent.parent.parent / "billing" / "plans.yaml"


@dataclass(frozen=True)
class Condition:
    """Destinations in ``destinations`` are included only for callers from ``callers``."""

    destinations: frozenset[str]
    callers: frozenset[str]
    name: str


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    included_zones: frozenset[str]
    conditions: tuple[Condition, ...] = ()
    duration_days: int | None = None
    max_users: int | None = None
    max_numbers: int | None = None
    included_seconds_per_user: int | None = None
    fair_use_months: int = 6
    fair_use_factor: Decimal = Decimal(5)


# Why a plan includes a call or not, as (kind, condition, destination country, caller country); kind is
# included | premium | zone | condition. A plain tuple: rating runs per call, words only when read.
Basis = tuple[str, "Condition | None", "str | None", "str | None"]
_INCLUDED: Basis = ("included", None, None, None)
_PREMIUM: Basis = ("premium", None, None, None)
_ZONE: Basis = ("zone", None, None, None)


class Inclusion(NamedTuple):
    """Whether a plan includes a call, and why (in words when read)."""

    included: bool
    plan: Plan
    rate: Rate
    basis: Basis

    @property
    def why(self) -> str:
        return inclusion_text(self.plan, self.rate, self.basis)


def inclusion_text(plan: Plan, rate: Rate, basis: Basis) -> str:
    kind, condition, dest, caller = basis
    if kind == "premium":
        return (f"{rate.prefix} ({rate.destination}) is a premium-rate number: never included in a plan, "
                "billed at the deck rate")
    if kind == "zone":
        return f"plan {plan.name} does not include zone {rate.zone} ({rate.destination}): billed at the deck rate"
    if kind == "condition" and condition is not None:
        name = condition.name
        return (f"{rate.destination} ({dest}) is in {name}: included in plan {plan.name} only from a "
                f"{name} number, the caller's is {caller or 'unknown'}: billed at the deck rate")
    return f"zone {rate.zone} ({rate.destination}) is included in plan {plan.name}"


@dataclass(frozen=True)
class Plans:
    plans: Mapping[str, Plan]
    vat: Mapping[str, Decimal]
    country_sets: Mapping[str, frozenset[str]]
    source: str

    def get(self, name: str) -> Plan:
        try:
            return self.plans[name]
        except KeyError:
            raise ConfigError(f"{self.source}: unknown plan {name!r} (known: {', '.join(sorted(self.plans))})"
                              ) from None

    def vat_rate(self, country: str) -> Decimal:
        try:
            return self.vat[country.upper()]
        except KeyError:
            raise ConfigError(f"{self.source}: no VAT rate for country {country!r}: add it under 'vat:'"
                              ) from None


_CODE_REGIONS = {code: tuple(r for r in regions if r != "001")
                 for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()}


def regions_of_code(e164: str) -> tuple[str, ...]:
    """The countries sharing the calling code of ``e164`` (one for most codes; +1, +7, +44 have several).
    The country of the number (``country_of``) is one of them, or unknown."""
    if not e164.startswith("+"):
        return ()
    n, regions = _code_of(e164[1:4])
    # phonenumbers reads no country from fewer than 2 digits after the code
    return regions if n and len(e164) - 1 - n >= 2 and e164[1 + n:].isdigit() else ()


@functools.lru_cache(maxsize=1024)
def _code_of(head: str) -> tuple[int, tuple[str, ...]]:
    """(length of the calling code, its countries) for the first 3 digits of a number; (0, ()) if none."""
    if head[:1] == "0":
        return 0, ()
    for n in (1, 2, 3):  # calling codes are prefix-free: the first that exists is the code
        if not head[:n].isdigit() or len(head) < n:
            return 0, ()
        regions = _CODE_REGIONS.get(int(head[:n]))
        if regions is not None:
            return n, regions
    return 0, ()


def country_of(e164: str) -> str | None:
    """ISO country of an E.164 number (the main country of its calling code when ambiguous)."""
    regions = regions_of_code(e164)
    if len(regions) == 1:
        return regions[0]  # the answer phonenumbers gives for a code of one country, without parsing
    return _parsed_country_of(e164) if regions else None


@functools.lru_cache(maxsize=65536)
def _parsed_country_of(e164: str) -> str | None:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    if not region and number.country_code is not None:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return None if region in (None, "ZZ", "001") else str(region)


def inclusion(plan: Plan, rate: Rate, from_e164: str, to_e164: str) -> Inclusion:
    """Whether ``plan`` includes a call to ``to_e164`` (rated ``rate``) placed from ``from_e164``.
    A premium-rate number (the deck's premium flag) is never included, whatever the zone of its row."""
    basis = inclusion_basis(plan, rate, from_e164, to_e164)
    return Inclusion(basis[0] == "included", plan, rate, basis)


def inclusion_basis(plan: Plan, rate: Rate, from_e164: str, to_e164: str) -> Basis:
    """``inclusion`` without the wrapping (the per-call path)."""
    if rate.premium:
        return _PREMIUM
    if rate.zone not in plan.included_zones:
        return _ZONE
    if plan.conditions:
        dest_regions = regions_of_code(to_e164)
        for cond in plan.conditions:
            # Parse the numbers only when their calling code could be in the condition (+1 never is in
            # the EEA): rating runs for every call and most destinations are decided by the code alone.
            if not cond.destinations.intersection(dest_regions):
                continue
            dest = country_of(to_e164)
            if dest in cond.destinations:
                caller = country_of(from_e164)
                if caller not in cond.callers:
                    return ("condition", cond, dest, caller)
    return _INCLUDED


def trial_problem(plan: Plan, started_at: dt.datetime, at: dt.datetime, users: int, numbers: int) -> str | None:
    """Why the trial refuses service at ``at`` (expired, too many users or numbers), or None."""
    if plan.duration_days is not None and at >= started_at + dt.timedelta(days=plan.duration_days):
        ended = started_at + dt.timedelta(days=plan.duration_days)
        return f"the {plan.duration_days}-day {plan.name} plan ended at {ended.isoformat()}"
    if plan.max_users is not None and users > plan.max_users:
        return f"plan {plan.name} allows {plan.max_users} users, the account has {users}"
    if plan.max_numbers is not None and numbers > plan.max_numbers:
        return f"plan {plan.name} allows {plan.max_numbers} number(s), the account has {numbers}"
    return None


def included_seconds_left(plan: Plan, used_s: int) -> int | None:
    """Included seconds a user still has (None: no per-user cap)."""
    if plan.included_seconds_per_user is None:
        return None
    return max(0, plan.included_seconds_per_user - used_s)


# -- loading ---------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    return _Marked(mapping, node.start_mark.line + 1, node.start_mark.column + 1)


class _Marked(dict[Any, Any]):
    def __init__(self, data: dict[Any, Any], line: int, col: int) -> None:
        super().__init__(data)
        self.line, self.col = line, col


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(source: str, node: Any) -> str:
    if isinstance(node, _Marked):
        return f"{source}:{node.line}:{node.col}"
    return source


def load_plans(path: Path = DEFAULT_PLANS_FILE) -> Plans:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the plans file: {exc.strerror or exc}") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_plans(doc, source)


def parse_plans(doc: Any, source: str) -> Plans:
    if not isinstance(doc, dict) or not isinstance(doc.get("plans"), dict):
        raise ConfigError(f"{source}:1:1: expected a mapping with 'plans:'")
    sets: dict[str, frozenset[str]] = {}
    for name, countries in (doc.get("country_sets") or {}).items():
        if not isinstance(countries, list) or not all(isinstance(c, str) and len(c) == 2 for c in countries):
            raise ConfigError(f"{_where(source, doc.get('country_sets'))}: country set {name!r} must be a list "
                              "of ISO 3166 alpha-2 codes")
        sets[str(name)] = frozenset(c.upper() for c in countries)
    vat: dict[str, Decimal] = {}
    for country, value in (doc.get("vat") or {}).items():
        try:
            vat[str(country).upper()] = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(f"{_where(source, doc.get('vat'))}: VAT for {country} is not a number: "
                              f"{value!r}") from None
    plans = {str(name): _plan(str(name), body, sets, source) for name, body in doc["plans"].items()}
    for required in ("payg", "unlimited", "trial"):
        if required not in plans:
            raise ConfigError(f"{_where(source, doc['plans'])}: plan {required!r} is missing")
    return Plans(plans, vat, sets, source)


def _countries(value: Any, sets: Mapping[str, frozenset[str]], where: str) -> tuple[frozenset[str], str]:
    if isinstance(value, str):
        if value not in sets:
            raise ConfigError(f"{where}: unknown country set {value!r} (known: {', '.join(sorted(sets))})")
        return sets[value], value
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return frozenset(c.upper() for c in value), "/".join(value)
    raise ConfigError(f"{where}: expected a country set name or a list of country codes, got {value!r}")


_PLAN_KEYS = {"description", "included_zones", "conditions", "duration_days", "max_users", "max_numbers",
              "included_seconds_per_user", "fair_use"}


def _plan(name: str, body: Any, sets: Mapping[str, frozenset[str]], source: str) -> Plan:
    where = _where(source, body)
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: plan {name!r} must be a mapping")
    unknown = set(body) - _PLAN_KEYS
    if unknown:
        raise ConfigError(f"{where}: plan {name!r} has unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_PLAN_KEYS))})")
    conditions = []
    for cond in body.get("conditions") or []:
        cwhere = _where(source, cond)
        if not isinstance(cond, dict) or set(cond) != {"destinations", "callers"}:
            raise ConfigError(f"{cwhere}: a condition has exactly 'destinations' and 'callers'")
        dest, dname = _countries(cond["destinations"], sets, cwhere)
        callers, _ = _countries(cond["callers"], sets, cwhere)
        conditions.append(Condition(dest, callers, dname))

    def _int(key: str) -> int | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: plan {name!r}: {key} must be a whole number >= 0, got {value!r}")
        return value

    fair = body.get("fair_use") or {}
    return Plan(name=name, description=str(body.get("description", "")),
                included_zones=frozenset(str(z) for z in body.get("included_zones") or []),
                conditions=tuple(conditions), duration_days=_int("duration_days"), max_users=_int("max_users"),
                max_numbers=_int("max_numbers"), included_seconds_per_user=_int("included_seconds_per_user"),
                fair_use_months=int(fair.get("months", 6)), fair_use_factor=Decimal(str(fair.get("factor", 5))))
