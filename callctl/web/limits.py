"""Rate limits (pure): at most ``limit`` events per key within a sliding ``window_s``."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class RateLimit:
    def __init__(self, limit: int, window_s: float, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:  # forget idle keys first: memory stays bounded
                for k in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window_s]:
                    del self._hits[k]
                if len(self._hits) >= self._max_keys:
                    self._hits.pop(next(iter(self._hits)))
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def hit(self, key: str) -> None:
        self._recent(key).append(self._clock())

    def take(self, key: str) -> bool:
        """Count one event; False (and not counted) when the key is over its limit."""
        if self.blocked(key):
            return False
        self.hit(key)
        return True
