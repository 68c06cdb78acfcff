"""A call leg's lifecycle facts (pure): created -> answered -> ended, with UTC times and a disposition.

Times come from Asterisk's own event timestamps where it gives them, so a CDR's duration is what
the caller lived, not when our event loop happened to look.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# Q.850 causes grouped into CDR dispositions (Asterisk's own CDR uses the same grouping).
_BUSY = {17}
_NO_ANSWER = {18, 19, 21}
_CONGESTION = {34, 38, 41, 42, 44, 47}


def disposition_for(answered: bool, cause: int | None) -> str:
    if answered:
        return "ANSWERED"
    if cause in _BUSY:
        return "BUSY"
    if cause in _CONGESTION:
        return "CONGESTION"
    if cause in _NO_ANSWER or cause in (16, 0, None):
        return "NO ANSWER"
    return "FAILED"


def dial_status(cause: int | None) -> str:
    """The Q.850 cause of an unanswered leg -> the dial outcome a flow branches on (same groups)."""
    if cause in _BUSY:
        return "busy"
    if cause in _NO_ANSWER or cause in (16, None):
        return "noanswer"
    if cause in _CONGESTION:
        return "congestion"
    return "failed"


@dataclass
class Lifecycle:
    started_at: dt.datetime
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    hangup_cause: int | None = None
    hangup_reason: str = ""
    ended_by: str = ""  # caller | engine | shutdown | lost
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "answered" if self.answered_at is not None else "ringing"

    def answered(self, at: dt.datetime) -> None:
        if self.answered_at is None and self.ended_at is None:
            self.answered_at = at

    def hangup_requested(self, by: str, cause: int | None = None) -> None:
        if not self.ended_by:
            self.ended_by = by
        if cause is not None and self.hangup_cause is None:
            self.hangup_cause = cause

    def ended(self, at: dt.datetime, cause: int | None, reason: str) -> None:
        if self.ended_at is not None:
            return
        self.ended_at = max(at, self.answered_at or self.started_at)
        if cause is not None:
            self.hangup_cause = cause
        self.hangup_reason = reason
        if self.hangup_cause is None:
            self.hangup_cause = 16  # normal clearing: Asterisk reported no other cause
        if not self.ended_by:
            self.ended_by = "caller"

    @property
    def disposition(self) -> str:
        return disposition_for(self.answered_at is not None, self.hangup_cause)
