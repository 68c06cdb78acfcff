"""Change notices per conference for the Online Space's live pages: rooms (and the space's own
messages and documents) say "something changed"; each page stream waits for the next notice."""

from __future__ import annotations

import asyncio

from callctl.tasks import wait_for_event


class ChangeFeed:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._versions: dict[str, int] = {}  # notices so far per conference (a few ints per daemon's life)

    def version(self, conference_id: str) -> int:
        """Take it before reading the state; pass it to ``wait_for_change`` (no notice is missed between)."""
        return self._versions.get(conference_id, 0)

    def notify(self, conference_id: str) -> None:
        """Wake every stream waiting on this conference (sync, never waits)."""
        self._versions[conference_id] = self._versions.get(conference_id, 0) + 1
        event = self._events.pop(conference_id, None)
        if event is not None:
            event.set()

    async def wait_for_change(self, conference_id: str, timeout_s: float, seen: int | None = None) -> bool:
        """True when a change came within ``timeout_s`` (or already came after version ``seen``: a stream
        busy reading the state when the notice came would otherwise sleep until its keep-alive); False on
        timeout (time for a keep-alive)."""
        if seen is not None and self._versions.get(conference_id, 0) != seen:
            return True
        return await wait_for_event(self._events.setdefault(conference_id, asyncio.Event()), timeout_s)
