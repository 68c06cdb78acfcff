"""Change notices per conference for the Online Space's live pages: rooms (and the space's own
messages and documents) say "something changed"; each page stream waits for the next notice."""

from __future__ import annotations

import asyncio


class ChangeFeed:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def notify(self, conference_id: str) -> None:
        """Wake every stream waiting on this conference (sync, never waits)."""
        event = self._events.pop(conference_id, None)
        if event is not None:
            event.set()

    async def wait_for_change(self, conference_id: str, timeout_s: float) -> bool:
        """True when a change came within ``timeout_s``; False on timeout (time for a keep-alive)."""
        event = self._events.setdefault(conference_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout_s):
                await event.wait()
        except TimeoutError:
            return False
        return True
