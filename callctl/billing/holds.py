"""The sweep of credit holds a dead engine left: run at every resynchronisation, and again while holds
are kept (their call may still be up) every SWEEP_AGAIN_S or as soon as a call ends. Told of calls
through the supervisor's ``CallEnds`` hook (``callctl.calls.supervisor``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping

from callctl.calls.result import EndedCall
from callctl.logging import get_logger
from callctl.tasks import wait_for_event

log = get_logger("callctl.billing")

SWEEP_AGAIN_S = 60.0  # while holds are kept, they are looked at again this often (or when a call ends)
SWEEP_GAP_S = 5.0  # but never more often than this: calls ending at a high rate do not poll PostgreSQL

ChannelUp = Callable[[str], Awaitable[bool]]
# (channels of the calls owned now, billed seconds of calls an engine saw end, "is this channel still up?")
# -> how many holds were kept because their call may still be up (PrepaidBilling.settle_abandoned).
Sweep = Callable[[Collection[str], Mapping[str, int], ChannelUp], Awaitable[int]]


class HoldSweeper:
    def __init__(self, sweep: Sweep, owned: Callable[[], Collection[str]], channel_up: ChannelUp) -> None:
        self._sweep = sweep
        self._owned = owned
        self._channel_up = channel_up
        self._seen_s: dict[str, int] = {}  # channel -> billed seconds of calls recovered or adopted here
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()

    # -- CallEnds ----------------------------------------------------------------------------------

    def call_ended(self, ended: EndedCall) -> None:
        if ended.adopted:
            # A call a dead engine started may hold credit this engine knows nothing of: settle it now,
            # from Asterisk's events of the channel, else from what this engine saw of the call.
            self._request({ended.channel_id: ended.billed_s})
        elif self._task is not None and not self._task.done():
            self._request({})  # holds are kept: a call that ends may be one of theirs

    def resynced(self, recovered_s: Mapping[str, int]) -> None:
        self._request(recovered_s)  # now that the calls still up are known

    # ----------------------------------------------------------------------------------------------

    def _request(self, seen: Mapping[str, int]) -> None:
        self._seen_s.update(seen)
        self._now.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="credit-holds-sweep")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._now.clear()
            started = loop.time()
            try:
                kept = await self._sweep(set(self._owned()), dict(self._seen_s), self._channel_up)
            except Exception:  # the sweep must never die silently: look again later
                log.exception("credit_holds_sweep_crashed")
                kept = 1
            if not kept and not self._now.is_set():
                return
            await wait_for_event(self._now, SWEEP_AGAIN_S)
            await asyncio.sleep(max(0.0, started + SWEEP_GAP_S - loop.time()))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5)
