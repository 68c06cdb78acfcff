"""Conference codes while PostgreSQL is unreachable (issue 18): the engine keeps the codes of the
conferences open now or opening within ``horizon_s`` in memory, refreshed every ``refresh_s``, and
uses them only when the database cannot be asked. Wrong codes are counted in memory meanwhile (the
lockout still holds on this engine) and every attempt is written when the database is back.
(docs/scaling.md, "What survives a node": conference codes.)"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.store import conferences as store
from callctl.tasks import wait_for_event

log = get_logger("callctl.conference")

HORIZON_S = 3600.0  # conferences opening within the hour are kept too
REFRESH_S = 30.0
RETRY_S = 1.0  # while the database is unreachable or attempts wait to be written
MAX_QUEUED = 10_000  # attempts kept for writing later (the oldest dropped beyond)

Attempt = tuple[str, str, str, uuid.UUID | None, dt.datetime]  # caller, access number, reason, conference, at


class OfflineCodes:
    def __init__(self, pool: Any, *, horizon_s: float = HORIZON_S, refresh_s: float = REFRESH_S,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._pool = pool
        self._horizon_s = horizon_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._codes: dict[str, list[store.CodeMatch]] | None = None  # None: never loaded
        self._queued: collections.deque[Attempt] = collections.deque(maxlen=MAX_QUEUED)
        self._wrong: list[tuple[str, str, dt.datetime]] = []  # wrong codes keyed during the outage
        self._failing = False
        self._queued_now = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._codes is not None

    # -- used by the conference service when the database cannot be asked -----------------------

    def find(self, code: str, access_number: str) -> store.CodeMatch | None:
        for match in (self._codes or {}).get(code, []):
            if access_number in match.conference.access_numbers:
                return match
        return None

    def failures(self, caller: str, access_number: str, window_s: float) -> tuple[int, int]:
        """Wrong codes keyed during the outage in the last ``window_s``: (by this caller, on this number)."""
        since = self._clock() - dt.timedelta(seconds=window_s)
        recent = [(c, n) for c, n, at in self._wrong if at > since]
        return sum(1 for c, _n in recent if c == caller), sum(1 for _c, n in recent if n == access_number)

    def wrong_code(self, caller: str, access_number: str, window_s: float) -> tuple[int, int]:
        """Count a wrong code (and keep it for the database); the failures, this one included."""
        now = self._clock()
        self._wrong.append((caller, access_number, now))
        self.attempt(caller, access_number, "wrong_code", None)
        return self.failures(caller, access_number, window_s)

    def attempt(self, caller: str, access_number: str, reason: str, conference_id: uuid.UUID | None) -> None:
        self._queued.append((caller, access_number, reason, conference_id, self._clock()))
        self._queued_now.set()  # written as soon as the database answers again

    # -- upkeep ------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        try:
            if self._queued:
                batch = list(self._queued)
                await store.record_attempts(self._pool, batch)
                for _ in batch:
                    self._queued.popleft()
                log.info("conference_attempts_written_after_outage", attempts=len(batch))
            rows = await store.codes_near(self._pool, self._clock(), self._horizon_s)
        except StoreError as exc:
            if not self._failing:
                log.warning("conference_codes_kept_in_memory", error=exc.message,
                            codes=sum(len(v) for v in (self._codes or {}).values()))
            self._failing = True
            return
        codes: dict[str, list[store.CodeMatch]] = {}
        for code, match in rows:
            codes.setdefault(code, []).append(match)
        if self._codes is None or self._failing:
            log.info("conference_codes_cached", codes=len(rows))
        self._codes = codes
        self._failing = False
        self._wrong.clear()  # the database has them now

    async def run(self) -> None:
        while True:
            self._queued_now.clear()
            await self.refresh()
            if self._queued or self._failing:  # retried every second until written and refreshed
                await asyncio.sleep(min(self._refresh_s, RETRY_S))
                continue
            await wait_for_event(self._queued_now, self._refresh_s)
