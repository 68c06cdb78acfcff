"""Free minutes (pure): the terms an organizer-paid conference leg draws its pool under, and a settled
leg. Shared by the conference (its legs draw a pool) and billing (which sells pools and states them),
so neither imports the other; billing.minutes holds the statements (issue 10).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass

WHEN_EXHAUSTED = ("end", "move")
ASTERISK_GRACE_S = 2  # Asterisk's own cut-off comes this long after the engine's, as a backstop
MOVE_ANNOUNCE_S = 20  # "move": time given to the local-number message before Asterisk hangs up


@dataclass(frozen=True)
class MeterTerms:
    """How one organizer-paid line draws its pool (numbers.yaml ``organizer_paid``)."""

    hold_s: int = 120
    min_leg_s: int = 60
    warn_before_s: int = 60
    when_exhausted: str = "end"

    @property
    def extend_when_left_s(self) -> int:
        """A leg asks for its next slice when this much of its hold is left (before the warning is due)."""
        return self.warn_before_s + max(1, self.hold_s // 4)


def grant(available_s: int, wanted_s: int, minimum_s: int) -> int:
    """Seconds to hold out of ``available_s``: at most ``wanted_s``, 0 if fewer than ``minimum_s`` are free."""
    if available_s < max(1, minimum_s):
        return 0
    return min(wanted_s, available_s)


def used_seconds(elapsed_s: float, held_s: int) -> int:
    """Seconds a leg draws: whole seconds rounded up (per second from the first), never above its hold."""
    if elapsed_s <= 0:
        return 0
    return min(held_s, math.ceil(round(elapsed_s, 3)))


def spoken_number(e164: str) -> str:
    """Digits to read out for a number (ARI ``digits:``): the E.164 digits without the +."""
    return "".join(ch for ch in e164 if ch.isdigit())


@dataclass(frozen=True)
class PaidLeg:
    """One settled leg: a hold on the pool and the seconds it used."""

    hold_id: uuid.UUID
    conference_id: uuid.UUID
    subject: str
    person: str
    access_number: str
    leg_id: uuid.UUID
    started_at: dt.datetime
    used_s: int
