"""CDR records as COPY text lines: hostile values never break the stream nor shift a column."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from tests.unit.test_cdr_spool import record

# Everything COPY text or PostgreSQL could choke on: the four escaped characters, a literal \N (must stay
# text, not NULL), the end-of-data marker, NUL, a lone surrogate, line/paragraph separators, bidi
# override, an emoji, a combining accent.
HOSTILE = "a\tb\nc\rd\\e\\N\\.\x00f\ud800g\u2028h\u2029\u202ei😀e\u0301"


def hostile(i: int) -> CdrRecord:
    """A record with hostile text in caller-controlled fields and in ``extra`` (keys and values)."""
    return record(i, person=f"{HOSTILE} #{i}", hangup_reason="\\N", flow="\\.", account_id="", user_id="\ud800",
                  role="\t", extra={f"k{HOSTILE}": [HOSTILE, None, 1.5, {"n": "\x00"}], "literal": "\\u0000",
                                    "\\": "\\\\u0000", "i": i})


def stored(value: Any) -> Any:
    """What PostgreSQL keeps of a value: NUL as U+FFFD, a lone surrogate as '?'."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()
    if isinstance(value, dict):
        return {stored(k): stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(v) for v in value]
    return value


def stored_record(r: CdrRecord) -> CdrRecord:
    return dataclasses.replace(r, **{f.name: stored(getattr(r, f.name)) for f in dataclasses.fields(r)})


def assert_one_well_formed_line(line: bytes) -> None:
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert line.count(b"\t") == len(copyline.COLUMNS) - 1
    line.decode("utf-8")  # valid UTF-8, no surrogate


def test_a_plain_record_reads_back_equal() -> None:
    r = record(7, account_id="acct-1", conference_id="conf-9", person="Zoë", role="organizer", included=True,
               rating_deck="uk", rating_prefix="4420", rate_per_minute=Decimal("0.03"), cost=Decimal("0.0305"),
               currency="GBP")
    line = copyline.encode(r)
    assert_one_well_formed_line(line)
    assert copyline.decode(line) == r
    fields = dict(zip(copyline.COLUMN_NAMES, line.rstrip(b"\n").split(b"\t"), strict=True))
    assert fields["billed_s"] == b"62" and fields["included"] == b"true" and fields["cost"] == b"0.0305"
    assert fields["started_at"] == b"2026-03-14T09:27:00.589000+00:00"


def test_nulls_are_backslash_n_and_unanswered_bills_zero() -> None:
    r = record(1, answered_at=None, hangup_cause=None, disposition="NO ANSWER", extra={})
    fields = dict(zip(copyline.COLUMN_NAMES, copyline.encode(r).rstrip(b"\n").split(b"\t"), strict=True))
    assert fields["answered_at"] == fields["hangup_cause"] == fields["account_id"] == fields["cost"] == b"\\N"
    assert fields["billed_s"] == b"0" and fields["extra"] == b"{}"
    assert copyline.decode(copyline.encode(r)) == r


def test_hostile_text_stays_in_its_column_and_reads_back() -> None:
    r = hostile(3)
    line = copyline.encode(r)
    assert_one_well_formed_line(line)
    back = copyline.decode(line)
    assert back == stored_record(r)
    # Not NULL, not shifted: the literal \N, the empty string and the tab are text where they were.
    assert (back.hangup_reason, back.account_id, back.role, back.flow) == ("\\N", "", "\t", "\\.")
    assert back.user_id == "?" and back.extra["literal"] == "\\u0000" and back.extra["\\"] == "\\\\u0000"
    assert back.extra[stored(f"k{HOSTILE}")][3] == {"n": "\ufffd"}


def test_a_value_of_the_wrong_type_is_written_as_text_not_refused() -> None:
    odd = record(2, hangup_cause="16,\"x\"\tnull", person=42, leg_id="a,\"b\"\tc", cost="1\t2", extra=["x\ty"])
    fields = copyline.encode(odd).rstrip(b"\n").split(b"\t")
    assert len(fields) == len(copyline.COLUMNS)
    named = dict(zip(copyline.COLUMN_NAMES, fields, strict=True))
    assert named["hangup_cause"] == b'16,"x"\\tnull' and named["person"] == b"42"
    assert named["leg_id"] == b'a,"b"\\tc' and named["cost"] == b"1\\t2" and named["extra"] == b'["x\\\\ty"]'


NOT_AN_OBJECT = copyline.encode(record(1)).replace(b"{", b"[", 1).replace(b"}", b"]")


@pytest.mark.parametrize("line", [b"", b"a\tb\n", NOT_AN_OBJECT])
def test_decode_refuses_what_is_not_a_record(line: bytes) -> None:
    with pytest.raises(ValueError):
        copyline.decode(line)


_text = st.text(st.characters(exclude_categories=()), max_size=12)
_json = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                     | st.floats(allow_nan=False, allow_infinity=False) | _text,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(texts=st.fixed_dictionaries({name: st.none() | _text for name in ("account_id", "user_id", "flow", "person",
                                                                           "role", "currency")}),
       from_number=_text, extra=st.dictionaries(_text, _json, max_size=4),
       cause=st.none() | st.integers(-2**31, 2**31 - 1), included=st.none() | st.booleans(),
       cost=st.none() | st.decimals(allow_nan=False, allow_infinity=False),
       ended_ms=st.integers(0, 10**9), answered=st.booleans())
def test_any_text_and_extra_make_exactly_one_line_that_reads_back(
        texts: dict[str, Any], from_number: str, extra: dict[str, Any], cause: int | None,
        included: bool | None, cost: Decimal | None, ended_ms: int, answered: bool) -> None:
    started = dt.datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=dt.UTC)
    r = CdrRecord(leg_id=uuid.uuid4(), call_id=uuid.uuid4(), direction="inbound", from_number=from_number,
                  to_number="+33900000001", started_at=started, answered_at=started if answered else None,
                  ended_at=started + dt.timedelta(milliseconds=ended_ms), disposition="ANSWERED",
                  hangup_cause=cause, hangup_reason="normal", channel_id="c", extra=extra, cost=cost,
                  included=included, **texts)
    line = copyline.encode(r)
    assert_one_well_formed_line(line)
    assert copyline.decode(line) == stored_record(r)
