"""The conference lockout's failures kept in memory: the wrong codes of the last window, counted by caller
and by access number, so the check before a caller is asked for a code costs no PostgreSQL round trip.

PostgreSQL notifies channel ``callctl_conference_failure`` at every wrong code recorded, on any node and by
any path (migrations/0024: a trigger on ``conference_attempt``), and ``*`` when attempts are deleted (an
erasure): the cache then reads the window again. It serves only while its listener hears the channel
(callctl.store.listen): before the window has been read, and from the moment the connection is lost, the
check reads PostgreSQL as before. Staleness: a wrong code keyed on another node counts here once its
notification arrives, well under a millisecond after its commit on one host; a wrong code keyed on this
node is already counted exactly by the statement that recorded it (``find_code``).
"""

from __future__ import annotations

import heapq
import json
import time
from collections import Counter
from typing import Any

from callctl.store import conferences as store
from callctl.store.listen import ListeningCache

CHANNEL = "callctl_conference_failure"
LISTENER_APP_NAME = "callctl-lockout-listener"

_WINDOW_SQL = """SELECT id, caller, access_number, extract(epoch FROM at)::float8 AS at
                   FROM conference_attempt
                  WHERE reason = 'wrong_code' AND at > now() - make_interval(secs => $1)
                  ORDER BY id LIMIT $2"""


class LockoutCache(ListeningCache):
    """``async with LockoutCache(url, window_s) as cache: await cache.recent_failures(pool, caller, number)``.

    Holds at most ``max_entries`` failures; beyond that (an attack from many numbers) it stops serving
    and every check reads PostgreSQL until the listener reconnects and the window fits again."""

    channel = CHANNEL
    app_name = LISTENER_APP_NAME
    event = "conference_lockout_cache"
    hint = "lockout checks read PostgreSQL until the listener is back"

    def __init__(self, database_url: str, window_s: float, *, max_entries: int = 200_000,
                 ping_interval_s: float = 1.0, ping_timeout_s: float = 2.0, retry_max_s: float = 5.0) -> None:
        super().__init__(database_url, ping_interval_s=ping_interval_s, ping_timeout_s=ping_timeout_s,
                         retry_max_s=retry_max_s)
        self.window_s = window_s
        self.max_entries = max_entries
        # (the failure's expiry on PostgreSQL's clock, id, caller, number); PostgreSQL's clock is read as
        # this host's wall clock plus _skew_s (measured when the window is read), so a failure stops
        # counting at the instant the SQL check (``at > now() - window``) would stop counting it.
        self._expiries: list[tuple[float, int, str, str]] = []
        self._ids: set[int] = set()
        self._by_caller: Counter[str] = Counter()
        self._by_number: Counter[str] = Counter()
        self._skew_s = 0.0
        self.hits = 0
        self.misses = 0

    async def recent_failures(self, db: Any, caller: str, access_number: str) -> tuple[int, int]:
        """Failed code entries in the last ``window_s`` seconds: (by this caller, on this access number)."""
        if self.listening:
            self._expire(time.time() + self._skew_s)  # wall clock: compared with PostgreSQL's timestamps
            self.hits += 1
            return self._by_caller[caller], self._by_number[access_number]
        self.misses += 1
        return await store.recent_failures(db, caller, access_number, self.window_s)

    # -- keeping the window --------------------------------------------------------------------
    def _add(self, attempt_id: int, caller: str, number: str, at_epoch: float) -> None:
        if attempt_id in self._ids:  # read with the window and heard as well
            return
        if len(self._ids) >= self.max_entries:
            self.stop_serving(f"more than {self.max_entries} wrong codes in the window")
            return
        self._ids.add(attempt_id)
        heapq.heappush(self._expiries, (at_epoch + self.window_s, attempt_id, caller, number))
        self._by_caller[caller] += 1
        self._by_number[number] += 1

    def _expire(self, db_now: float) -> None:
        while self._expiries and self._expiries[0][0] <= db_now:
            _expiry, attempt_id, caller, number = heapq.heappop(self._expiries)
            self._ids.discard(attempt_id)
            for counter, key in ((self._by_caller, caller), (self._by_number, number)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

    def heard(self, payload: str) -> None:
        if payload != "*":
            try:
                attempt_id, caller, number, at_epoch = json.loads(payload)
                self._add(int(attempt_id), str(caller), str(number), float(at_epoch))
                return
            except (ValueError, TypeError):
                pass  # not ours to read: read the window again rather than guess
        self.stop_serving("attempts were deleted" if payload == "*" else "an unreadable notification")

    def forget(self) -> None:
        self._expiries.clear()
        self._ids.clear()
        self._by_caller.clear()
        self._by_number.clear()

    async def loaded(self, conn: Any) -> None:
        before = time.time()
        db_now = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"))
        self._skew_s = db_now - (before + time.time()) / 2  # off by at most half the round trip
        rows = await conn.fetch(_WINDOW_SQL, float(self.window_s), self.max_entries + 1)
        if len(rows) > self.max_entries:
            raise OverflowError(f"more than {self.max_entries} wrong codes in the window")
        for row in rows:
            self._add(row["id"], row["caller"], row["access_number"], row["at"])
