"""The CDR record: one frozen row per call leg, built from the call's lifecycle (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

# Leg ids are uuid5 of the Asterisk system and channel identity, so the same leg always maps to
# the same id (a spool replay or a re-adoption after a restart can never write it twice).
LEG_NAMESPACE = uuid.UUID("8a1f6f5e-3c1b-4d4e-9a43-1f0c2b7f6e10")


def leg_id_for(asterisk_id: str, channel_id: str, created_at: str) -> uuid.UUID:
    return uuid.uuid5(LEG_NAMESPACE, f"{asterisk_id}/{channel_id}/{created_at}")


_MS = dt.timedelta(milliseconds=1)


def answered_seconds(answered_at: dt.datetime | None, ended_at: dt.datetime) -> int:
    """Answer to end, rounded up to the whole second (a 0.001 s call bills 1 s; unanswered bills 0)."""
    if answered_at is None:
        return 0
    ms = (ended_at - answered_at) // _MS
    return -(-ms // 1000) if ms > 0 else 0  # integer ceiling: runs for every CDR written


def utc_ms(moment: dt.datetime) -> dt.datetime:
    """Truncate to the millisecond, in UTC (storage precision)."""
    moment = moment.astimezone(dt.UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclasses.dataclass(frozen=True)
class CdrRecord:
    leg_id: uuid.UUID
    call_id: uuid.UUID
    direction: str  # inbound | outbound | internal
    from_number: str
    to_number: str
    started_at: dt.datetime
    answered_at: dt.datetime | None
    ended_at: dt.datetime
    disposition: str
    hangup_cause: int | None
    hangup_reason: str
    channel_id: str
    account_id: str | None = None
    user_id: str | None = None
    flow: str | None = None
    dialplan_version: str | None = None
    conference_id: str | None = None
    person: str | None = None
    role: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Rating at call end (callctl.calls.result.Rating; None: not rated by the engine, statements rate it from the deck).
    rating_deck: str | None = None
    rating_prefix: str | None = None
    rate_per_minute: Decimal | None = None
    cost: Decimal | None = None
    currency: str | None = None
    included: bool | None = None

    def __post_init__(self) -> None:
        # Storage precision is the millisecond, in UTC: truncate once, here, for every producer.
        for name in ("started_at", "answered_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc_ms(value))

    @property
    def billed_s(self) -> int:
        return answered_seconds(self.answered_at, self.ended_at)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (ISO timestamps, string uuids and decimals) for the spool."""
        return {name: _plain(getattr(self, name)) for name in _FIELD_NAMES}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CdrRecord:
        kwargs = dict(data)
        for name in ("leg_id", "call_id"):
            kwargs[name] = uuid.UUID(kwargs[name])
        for name in ("started_at", "answered_at", "ended_at"):
            if kwargs.get(name) is not None:
                kwargs[name] = dt.datetime.fromisoformat(kwargs[name])
        for name in ("rate_per_minute", "cost"):
            if kwargs.get(name) is not None:
                kwargs[name] = Decimal(kwargs[name])
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CdrRecord))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | dict):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    return str(value)  # uuid.UUID, Decimal
