"""Access codes and admission windows (pure): random digit codes, who may enter when."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass

DEFAULT_CODE_LENGTH = 8
DEFAULT_LEAD = dt.timedelta(minutes=15)
DEFAULT_GRACE = dt.timedelta(minutes=30)


def new_code(taken: Collection[str], length: int = DEFAULT_CODE_LENGTH,
             randbelow: Callable[[int], int] = secrets.randbelow) -> str:
    """A random digit code not in ``taken``: never sequential nor derived from an id.

    No leading zero: some PSTN gateways strip it from DTMF-collected strings.
    """
    if length < 4:
        raise ValueError("access codes need at least 4 digits")
    for _ in range(1000):
        code = str(1 + randbelow(9)) + "".join(str(randbelow(10)) for _ in range(length - 1))
        if code not in taken:
            return code
    raise RuntimeError(f"no free {length}-digit code after 1000 tries: raise the code length")


@dataclass(frozen=True)
class Window:
    starts_at: dt.datetime
    ends_at: dt.datetime
    lead: dt.timedelta = DEFAULT_LEAD
    grace: dt.timedelta = DEFAULT_GRACE

    def admission(self, now: dt.datetime) -> str:
        """'open', 'too_early' or 'over' (the window is half-open: [start - lead, end + grace))."""
        if now < self.starts_at - self.lead:
            return "too_early"
        if now >= self.ends_at + self.grace:
            return "over"
        return "open"
