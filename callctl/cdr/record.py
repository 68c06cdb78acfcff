"""The CDR record: one frozen row per call leg, built from the call's lifecycle (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from typing import Any

# Leg ids are uuid5 of the Asterisk system and channel identity, so the same leg always maps to
# the same id (a spool replay or a re-adoption after a restart can never write it twice).
LEG_NAMESPACE = uuid.UUID("8a1f6f5e-3c1b-4d4e-9a43-1f0c2b7f6e10")


def leg_id_for(asterisk_id: str, channel_id: str, created_at: str) -> uuid.UUID:
    return uuid.uuid5(LEG_NAMESPACE, f"{asterisk_id}/{channel_id}/{created_at}")


def billed_seconds(answered_at: dt.datetime | None, ended_at: dt.datetime) -> int:
    """Answer to end, rounded up to the whole second (a 0.001 s call bills 1 s; unanswered bills 0)."""
    if answered_at is None:
        return 0
    ms = (ended_at - answered_at) // dt.timedelta(milliseconds=1)
    return max(0, math.ceil(ms / 1000))


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

    def __post_init__(self) -> None:
        # Storage precision is the millisecond, in UTC: truncate once, here, for every producer.
        for name in ("started_at", "answered_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc_ms(value))

    @property
    def billed_s(self) -> int:
        return billed_seconds(self.answered_at, self.ended_at)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (ISO timestamps, string uuids) for the spool."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.datetime):
                value = value.isoformat(timespec="milliseconds")
            elif isinstance(value, uuid.UUID):
                value = str(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CdrRecord:
        kwargs = dict(data)
        for name in ("leg_id", "call_id"):
            kwargs[name] = uuid.UUID(kwargs[name])
        for name in ("started_at", "answered_at", "ended_at"):
            if kwargs.get(name) is not None:
                kwargs[name] = dt.datetime.fromisoformat(kwargs[name])
        return cls(**kwargs)
