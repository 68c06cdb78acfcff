"""The rooms' join/leave rows on their way to PostgreSQL: buffered, written in batches, never on a
call's path.

A room records synchronously; one writer task drains the buffer. Idle, a row is written at once;
under load, at most one write per ``min_interval_s``, each taking every row buffered meanwhile (at
8 calls/s: one INSERT a second instead of 16; the rows are history, read by people and the privacy
tools, never by a call, so a second's delay costs nothing and each write costs the engine a PostgreSQL
round trip and its wake-ups). While PostgreSQL is unavailable the
rows stay buffered (up to ``max_pending``) and the write is retried with backoff; closing writes
what is left.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence

from callctl.errors import StoreError, StoreUnavailable
from callctl.logging import get_logger

log = get_logger("callctl.conference")

# conference_id, person, role, what, at, reason, leg_id (the conference_event columns)
EventRow = tuple[uuid.UUID, str, str, str, dt.datetime, str | None, uuid.UUID]
WriteRows = Callable[[Sequence[EventRow]], Awaitable[None]]

MAX_BATCH = 1000
RETRY_MAX_S = 30.0


class TimelineWriter:
    def __init__(self, write: WriteRows, *, min_interval_s: float = 1.0, retry_s: float = 1.0,
                 max_pending: int = 10_000) -> None:
        self._write = write
        self._min_interval_s = min_interval_s
        self._retry_s = retry_s
        self._max_pending = max_pending
        self._rows: list[EventRow] = []
        self._task: asyncio.Task[None] | None = None
        self._last_write = float("-inf")
        self._failing = False
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._rows)

    def record(self, conference_id: str, person: str, role: str, what: str, at: dt.datetime,
               reason: str | None, leg_id: str) -> None:
        """Buffer one row (the rooms' ``TimelineSink``); never waits."""
        if len(self._rows) >= self._max_pending:  # PostgreSQL gone for long: the newest rows go
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("conference_timeline_rows_dropped", dropped=self.dropped, pending=len(self._rows))
            return
        self._rows.append((uuid.UUID(conference_id), person, role, what, at, reason, uuid.UUID(leg_id)))
        if self._task is None or self._task.done():
            # Its own context: the writer serves every call and must not log the first one's call_id.
            self._task = asyncio.create_task(self._drain(), name="conference-timeline",
                                             context=contextvars.Context())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        retry_s = self._retry_s
        while self._rows:
            wait_s = self._last_write + self._min_interval_s - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            batch = self._rows[:MAX_BATCH]  # rows are only appended meanwhile: the head stays put
            self._last_write = loop.time()
            try:
                await self._write(batch)
            except StoreUnavailable as exc:
                if not self._failing:
                    log.error("conference_timeline_write_failed", error=exc.message, pending=len(self._rows))
                    self._failing = True
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, RETRY_MAX_S)
                continue
            except (StoreError, OSError) as exc:  # these rows cannot be written: the others still can
                log.error("conference_timeline_write_failed", error=str(exc), dropped=len(batch))
            except Exception as exc:  # a store bug must not stop the writer
                log.error("conference_timeline_write_failed", error=repr(exc), dropped=len(batch))
            else:
                if self._failing:
                    log.info("conference_timeline_written_again", rows=len(batch))
                    self._failing = False
                retry_s = self._retry_s
            del self._rows[:len(batch)]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is buffered (within ``timeout_s``); what cannot be written is logged as lost."""
        task = self._task
        if task is not None and not task.done():
            self._min_interval_s = 0.0
            self._retry_s = min(self._retry_s, 0.5)
            done, _ = await asyncio.wait([task], timeout=timeout_s)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
        if self._rows:
            log.error("conference_timeline_rows_lost", rows=len(self._rows))
