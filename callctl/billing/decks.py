"""Rate deck CSV files (pure): header row, required and optional columns, every bad row reported as
FILE:LINE: reason. A deck with any problem is refused whole."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from callctl.billing.rating import ZERO, Rate, premium_by_tariff

REQUIRED = ("prefix", "destination", "zone", "rate_per_minute", "currency")
OPTIONAL = ("connect_fee", "first_block_s", "increment_s", "per_call", "premium")
# What the rate table keeps (migrations/0004: numeric(14,6)): a price with more is refused, never rounded.
PRICE_DECIMALS = 6
PRICE_LIMIT = Decimal(10) ** 8
_FLAGS = {"yes": True, "true": True, "1": True, "y": True, "no": False, "false": False, "0": False, "n": False}
CURRENCIES = frozenset({"EUR", "CHF", "GBP"})
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f]")  # PostgreSQL refuses NUL in text; the others are no names
MAX_PROBLEMS = 1000  # beyond this the file is clearly not a deck; stop listing


@dataclass(frozen=True)
class DeckFileError(Exception):
    """The deck was refused; ``problems`` holds every ``FILE:LINE: reason`` found (capped)."""

    problems: tuple[str, ...]

    def __str__(self) -> str:
        return self.problems[0] if self.problems else "rate deck refused"


def _decimal(text: str, column: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{column} is not a decimal number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{column} must be a finite number >= 0, got {text!r}")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > PRICE_DECIMALS and value != value.quantize(Decimal(1).scaleb(-PRICE_DECIMALS)):
        raise ValueError(f"{column} {text} has {-exponent} decimals, at most {PRICE_DECIMALS} are kept: "
                         "give the price the deck means with 6 decimals or fewer (it is never rounded)")
    if value >= PRICE_LIMIT:
        raise ValueError(f"{column} {text} is too large (below {PRICE_LIMIT:,} per row)")
    return value


def _seconds(text: str, column: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{column} must be a whole number of seconds >= 1, got {text!r}")
    return int(text)


def parse_row(row: dict[str, str]) -> Rate:
    """One CSV row (column -> text) as a Rate; ValueError says what is wrong."""
    prefix = row["prefix"].strip().lstrip("+")
    if not prefix.isdigit() or len(prefix) > 15:
        raise ValueError(f"prefix must be 1-15 digits (an optional leading '+'), got {row['prefix']!r}")
    destination = row["destination"].strip()
    if not destination:
        raise ValueError("destination is empty")
    zone = row["zone"].strip()
    if not zone:
        raise ValueError("zone is empty")
    currency = row["currency"].strip().upper()
    if currency not in CURRENCIES:
        raise ValueError(f"currency must be one of {', '.join(sorted(CURRENCIES))}, got {row['currency']!r}")

    for column, value in (("destination", destination), ("zone", zone)):
        if _UNSAFE.search(value):
            raise ValueError(f"{column} contains a control character (NUL, tab, ...): {value!r}")

    def opt(column: str) -> str:
        return (row.get(column) or "").strip()

    per_call = _decimal(opt("per_call"), "per_call") if opt("per_call") else ZERO
    increment_s = _seconds(opt("increment_s"), "increment_s") if opt("increment_s") else 1
    flag = opt("premium").lower()
    if flag and flag not in _FLAGS:
        raise ValueError(f"premium must be yes or no, got {row['premium']!r}")
    return Rate(prefix=prefix, destination=destination, zone=zone,
                rate_per_minute=_decimal(row["rate_per_minute"].strip(), "rate_per_minute"), currency=currency,
                connect_fee=_decimal(opt("connect_fee"), "connect_fee") if opt("connect_fee") else ZERO,
                first_block_s=_seconds(opt("first_block_s"), "first_block_s") if opt("first_block_s") else 1,
                increment_s=increment_s, per_call=per_call,
                premium_flag=_FLAGS[flag] if flag else premium_by_tariff(per_call, increment_s))


def read_deck(stream: TextIO, source: str, *, progress: Callable[[int], None] | None = None) -> list[Rate]:
    """Every row of a deck CSV, or DeckFileError listing every problem as ``source:LINE: reason``."""
    reader = csv.reader(stream)
    problems: list[str] = []
    try:
        header = next(reader)
    except StopIteration:
        raise DeckFileError((f"{source}:1: empty file, expected a header row "
                             f"({','.join(REQUIRED)}[,{','.join(OPTIONAL)}])",)) from None
    except csv.Error as exc:
        raise DeckFileError((f"{source}:1: {exc}",)) from None
    columns = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    duplicate = sorted({c for c in columns if columns.count(c) > 1})
    if missing:
        problems.append(f"{source}:1: header lacks required column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"{source}:1: unknown column(s) {', '.join(unknown)} "
                        f"(allowed: {', '.join(REQUIRED + OPTIONAL)})")
    if duplicate:
        problems.append(f"{source}:1: duplicate column(s) {', '.join(duplicate)}")
    if problems:
        raise DeckFileError(tuple(problems))
    rates: list[Rate] = []
    seen: dict[str, int] = {}
    for line, fields in _lines(reader, source, problems):
        if progress is not None and line % 10_000 == 0:
            progress(line)
        if not fields or fields == [""]:
            continue
        if len(fields) != len(columns):
            problems.append(f"{source}:{line}: {len(fields)} field(s), the header has {len(columns)}")
        else:
            try:
                rate = parse_row(dict(zip(columns, fields, strict=True)))
            except ValueError as exc:
                problems.append(f"{source}:{line}: {exc}")
            else:
                if rate.prefix in seen:
                    problems.append(f"{source}:{line}: prefix {rate.prefix} already defined on line "
                                    f"{seen[rate.prefix]}")
                else:
                    seen[rate.prefix] = line
                    rates.append(rate)
        if len(problems) >= MAX_PROBLEMS:
            problems.append(f"{source}: stopped after {MAX_PROBLEMS} problems")
            break
    if problems:
        raise DeckFileError(tuple(problems))
    if not rates:
        raise DeckFileError((f"{source}:2: the deck has no rows",))
    return rates


def _lines(reader: Iterator[list[str]], source: str, problems: list[str]) -> Iterator[tuple[int, list[str]]]:
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"{source}:{line + 1}: {exc}")
            return
        line = getattr(reader, "line_num", line + 1)
        yield line, fields


def load_deck_file(path: Path, *, progress: Callable[[int], None] | None = None) -> list[Rate]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return read_deck(stream, str(path), progress=progress)
    except OSError as exc:
        raise DeckFileError((f"{path}: cannot read: {exc.strerror or exc}",)) from None
    except UnicodeDecodeError as exc:
        raise DeckFileError((f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",)) from None
