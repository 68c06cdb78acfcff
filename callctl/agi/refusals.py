"""Refused FastAGI sessions, logged per peer and interval with counts: a flood of bad sessions (900
half-open connections) must not become a flood of log lines.

The first refusal of a kind (its reason) from a peer in an interval is logged at once (an operator
sees each problem start); the others are counted and logged as one ``agi_sessions_refused`` line per
peer and reason when the interval ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("callctl.agi")

MAX_KEYS = 1024  # (peer, reason) pairs tracked per interval; beyond, counted together under "other"
OTHER = "other"

Emit = Callable[..., Any]


class RefusalTally:
    """Counts refused sessions per peer and reason over ``interval_s``; see the module docstring.
    A reason is a slug; what follows its first ':' is a detail (shown on the first line only)."""

    def __init__(self, interval_s: float = 60.0, *, emit: Emit | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._emit = emit if emit is not None else log.warning
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()  # (peer, reason) -> refusals not logged yet
        self._opened_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, peer: str, reason: str, **details: Any) -> None:
        """One refused session; logs it now if it is the peer's first in this interval."""
        if self._opened_at is not None and self._clock() - self._opened_at >= self.interval_s:
            self.flush()
        if self._opened_at is None:
            self._opened_at = self._clock()
            self._schedule()
        key = (peer, reason.partition(":")[0])
        if key not in self._counts:
            if len(self._counts) >= MAX_KEYS:
                self._counts[(OTHER, OTHER)] += 1
                return
            self._counts[key] = 0
            self._emit("agi_session_refused", peer=peer, reason=reason, **details)
            return
        self._counts[key] += 1

    def flush(self) -> None:
        """Log what was counted since the interval opened (one line per peer) and start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        elapsed = 0.0 if self._opened_at is None else self._clock() - self._opened_at
        for (peer, reason), count in self._counts.items():
            if count:
                self._emit("agi_sessions_refused", peer=peer, reason=reason, refused=count,
                           interval_s=round(elapsed, 1))
        self._counts.clear()
        self._opened_at = None

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test): the next refusal or close() flushes
            return
        self._timer = loop.call_later(self.interval_s, self.flush)

    def close(self) -> None:
        self.flush()
