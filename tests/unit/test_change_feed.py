"""The Online Space's change notices (callctl.conference.changes): a notice that comes while a page's
stream is busy reading the state (not waiting) is not lost until the next keep-alive."""

from __future__ import annotations

import asyncio

from callctl.conference.changes import ChangeFeed


def test_a_notice_between_reading_the_state_and_waiting_wakes_the_stream_at_once() -> None:
    async def main() -> None:
        feed = ChangeFeed()
        seen = feed.version("c1")  # the stream takes the version, then reads the state...
        feed.notify("c1")  # ...while a change comes (nobody waiting yet)
        assert await feed.wait_for_change("c1", 5.0, seen) is True  # not 5 s later
        seen = feed.version("c1")
        assert await feed.wait_for_change("c1", 0.05, seen) is False  # nothing new: a keep-alive
        waiting = asyncio.create_task(feed.wait_for_change("c1", 5.0, feed.version("c1")))
        await asyncio.sleep(0)
        feed.notify("c2")  # another conference's change does not wake it
        feed.notify("c1")
        assert await waiting is True

    asyncio.run(main())
