"""Routes decoded events to the mailbox of the call that owns the channel; never awaits.

The websocket reader calls ``route`` for every event. It only looks up a dict and does
``put_nowait``: one slow call can never stall the reader or another call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callctl.ari.events import ChannelEvent, Event, StasisStart
from callctl.ids import ChannelId

Mailbox = asyncio.Queue[Event]


class Dispatcher:
    def __init__(self, on_new_channel: Callable[[StasisStart], None]) -> None:
        self._mailboxes: dict[ChannelId, Mailbox] = {}
        self._on_new_channel = on_new_channel
        self.events_total = 0
        self.events_unrouted = 0

    def register(self, channel_id: ChannelId, mailbox: Mailbox) -> None:
        self._mailboxes[channel_id] = mailbox

    def unregister(self, channel_id: ChannelId) -> None:
        self._mailboxes.pop(channel_id, None)

    def owns(self, channel_id: ChannelId) -> bool:
        return channel_id in self._mailboxes

    def route(self, event: Event) -> None:
        self.events_total += 1
        if isinstance(event, StasisStart):
            box = self._mailboxes.get(event.channel.id)
            if box is None:
                self._on_new_channel(event)
            else:
                box.put_nowait(event)
            return
        if isinstance(event, ChannelEvent):
            box = self._mailboxes.get(event.channel_id)
            if box is not None:
                box.put_nowait(event)
                return
        self.events_unrouted += 1
