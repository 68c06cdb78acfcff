"""A CDR record as one line of PostgreSQL's COPY text format: the spool's format on disk and the bytes
the store sends to ``COPY cdr (COLUMNS) FROM STDIN`` unchanged, so each record is encoded once (pure).

Format: the columns of ``COLUMNS`` in that order, separated by tabs, ``\\N`` for
NULL, ``\\\\ \\t \\n \\r`` escapes in text, one record a line ending with ``\\n``; uuids and timestamps are
written by orjson (ISO 8601, UTC, ``+00:00``). Values PostgreSQL cannot hold are replaced, never
refused, so one odd character cannot lose a record: a NUL byte becomes U+FFFD (text and jsonb hold no
NUL) and a lone surrogate becomes ``?`` (not UTF-8). Changing ``COLUMNS`` changes the format: give the
spool segments a new suffix then, so lines of the old order are never read with the new one.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
import uuid
from decimal import Decimal
from typing import Any

import orjson

from callctl.cdr.record import CdrRecord

# (column, PostgreSQL type) in line order. Fixed-format values first: orjson writes them in one call.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("leg_id", "uuid"), ("call_id", "uuid"), ("started_at", "timestamptz"), ("answered_at", "timestamptz"),
    ("ended_at", "timestamptz"), ("billed_s", "int4"), ("hangup_cause", "int4"), ("included", "bool"),
    ("direction", "text"), ("from_number", "text"), ("to_number", "text"), ("disposition", "text"),
    ("hangup_reason", "text"), ("channel_id", "text"), ("account_id", "text"), ("user_id", "text"),
    ("flow", "text"), ("dialplan_version", "text"), ("conference_id", "text"), ("person", "text"),
    ("role", "text"), ("rating_deck", "text"), ("rating_prefix", "text"), ("currency", "text"),
    ("extra", "jsonb"), ("rate_per_minute", "numeric"), ("cost", "numeric"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
_TEXT_NAMES = tuple(name for name, kind in COLUMNS if kind == "text")
_N_TEXT = len(_TEXT_NAMES)

_fixed = operator.attrgetter("leg_id", "call_id", "started_at", "answered_at", "ended_at")
_texts = operator.attrgetter(*_TEXT_NAMES)
_NULL = "\\N"
_NO_RATE = b"\\N\t\\N\n"  # rate_per_minute, cost: unrated, the common case
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
# A JSON \u0000 escape not itself escaped (an even number of backslashes before it): jsonb refuses it.
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def encode(record: CdrRecord) -> bytes:
    """The record as one COPY text line, newline included. Never raises for a value's content."""
    cause, included = record.hangup_cause, record.included
    if (type(record.leg_id) is uuid.UUID and type(record.call_id) is uuid.UUID and (cause is None or type(cause) is int)
            and (included is None or type(included) is bool)):
        fixed = orjson.dumps((*_fixed(record), record.billed_s, cause, included))
        # Only uuids, timestamps, ints, booleans and null: no quote, comma or "null" inside a value.
        head = fixed[1:-1].replace(b'"', b"").replace(b",", b"\t").replace(b"null", b"\\N")
    else:
        head = _fixed_slow(record)
    texts = _texts(record)
    try:
        text = "\t".join([_NULL if v is None else v for v in texts])
    except TypeError:  # not a str: written as its str(), like the JSON spool did
        text = "\t".join([_NULL if v is None else _escape(str(v)) for v in texts])
    else:
        if (text.count("\\") != texts.count(None) or text.count("\t") != _N_TEXT - 1 or "\n" in text
                or "\r" in text or "\x00" in text):
            text = "\t".join([_NULL if v is None else _escape(v) for v in texts])
    try:
        body = text.encode()
    except UnicodeEncodeError:
        body = text.encode("utf-8", "replace")
    rate, cost = record.rate_per_minute, record.cost
    tail = _NO_RATE if rate is None and cost is None else f"{_number(rate)}\t{_number(cost)}\n".encode()
    return b"".join((head, b"\t", body, b"\t", _extra(record.extra), b"\t", tail))


def _number(value: Decimal | None) -> str:
    return _NULL if value is None else _escape(str(value))  # escaped: typing aside, a str must not shift columns


def _fixed_slow(record: CdrRecord) -> bytes:
    # An id, hangup cause or "included" of another type (typing forbids it): written as str(), PostgreSQL judges.
    values = (*_fixed(record), record.billed_s, record.hangup_cause, record.included)
    fields = [_NULL if v is None else _escape(str(v)) for v in values]
    fields[2:5] = [_NULL if v is None else v.isoformat() for v in values[2:5]]
    return "\t".join(fields).encode("utf-8", "replace")


def _escape(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            .replace("\x00", "\ufffd"))


def _extra(extra: dict[str, Any]) -> bytes:
    if not extra:
        return b"{}"
    try:
        # default=str: a stray non-JSON value in ``extra`` must not make the whole record unwritable.
        data = orjson.dumps(extra, default=str, option=_JSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits
        data = json.dumps(extra, default=str, ensure_ascii=False).encode("utf-8", "replace")
    if b"\\" not in data:  # JSON escapes its own tabs and newlines: a backslash is all COPY needs escaped
        return data
    if b"\\u0000" in data:
        data = _JSON_NUL.sub(rb"\1\\ufffd", data)
    return data.replace(b"\\", b"\\\\")


# -- reading back (spool replay, rejected records, tests) ------------------------------------------
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(field: str) -> str:
    return _UNESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), field) if "\\" in field else field


def decode(line: bytes) -> CdrRecord:
    """The record of an ``encode`` line (trailing newline optional); ValueError if it is not one."""
    fields = line.rstrip(b"\n").decode().split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{len(fields)} fields, expected {len(COLUMNS)}")
    raw: dict[str, str | None] = {name: None if f == _NULL else _unescape(f)
                                  for name, f in zip(COLUMN_NAMES, fields, strict=True)}
    data: dict[str, Any] = {name: raw[name] for name in _TEXT_NAMES}
    for name in ("leg_id", "call_id"):
        data[name] = uuid.UUID(_required(raw, name))
    for name in ("started_at", "answered_at", "ended_at"):
        value = raw[name]
        data[name] = None if value is None else dt.datetime.fromisoformat(value)
    cause = raw["hangup_cause"]
    data["hangup_cause"] = None if cause is None else int(cause)
    included = raw["included"]
    data["included"] = None if included is None else {"true": True, "false": False}[included]
    for name in ("rate_per_minute", "cost"):
        value = raw[name]
        data[name] = None if value is None else Decimal(value)
    # Any JSON value: a record whose ``extra`` is not an object (typing forbids it) was stored, so it replays.
    data["extra"] = orjson.loads(_required(raw, "extra"))
    try:
        return CdrRecord(**data)
    except (TypeError, AttributeError) as exc:
        raise ValueError(str(exc)) from None


def _required(raw: dict[str, str | None], name: str) -> str:
    value = raw[name]
    if value is None:
        raise ValueError(f"{name} is NULL")
    return value
