"""SIP users' channel slots counted over all nodes: one slot per call in progress, kept in PostgreSQL
(``line_channel_slot``) with the node and channel that hold it, freed when the call ends, when the
node's own engine finds the channel gone at a resynchronisation, or when the node stops renewing its
heartbeat for ``lease_s`` (docs/lines.md, "Channel limit")."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from callctl.calls.result import EndedCall
from callctl.errors import StoreError
from callctl.logging import get_logger

log = get_logger("callctl.lines")


class SlotUser(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def channel_limit(self) -> int: ...


class ChannelLimits(Protocol):
    """Calls in progress per user: ``take`` is atomic (two calls at the same instant never both pass)."""

    async def take(self, user: SlotUser, channel_id: str) -> bool: ...
    async def release(self, user: SlotUser, channel_id: str) -> None: ...


class LocalChannelLimits:
    """The count in this engine's memory (one engine, no database: unit tests, simulations)."""

    def __init__(self) -> None:
        self._active: Counter[uuid.UUID] = Counter()
        self._channels: set[str] = set()

    async def take(self, user: SlotUser, channel_id: str) -> bool:
        if channel_id in self._channels:
            return True
        if self._active[user.user_id] >= user.channel_limit:
            return False
        self._active[user.user_id] += 1
        self._channels.add(channel_id)
        return True

    async def release(self, user: SlotUser, channel_id: str) -> None:
        if channel_id not in self._channels:
            return
        self._channels.discard(channel_id)
        self._active[user.user_id] -= 1
        if self._active[user.user_id] <= 0:
            del self._active[user.user_id]

    def active(self, user_id: uuid.UUID) -> int:
        return self._active[user_id]


@dataclass(frozen=True)
class SlotStore:
    """The SQL of the slots (callctl.store.lines), bound to a pool by the wiring."""

    take: Callable[[uuid.UUID, str, str, int, float], Awaitable[bool]]  # user, node, channel, limit, lease
    release: Callable[[str, Sequence[str]], Awaitable[None]]  # node, channels
    node_channels: Callable[[str], Awaitable[list[str]]]  # node -> channels holding a slot
    heartbeat: Callable[[str, float], Awaitable[int]]  # node, lease -> slots of dead nodes freed


ChannelUp = Callable[[str], Awaitable[bool]]


class SharedChannelLimits:
    """Slots in PostgreSQL, shared by every engine of the cluster. Also a ``CallEnds`` listener of the
    supervisor (``resynced``: reconcile this node's slots with the channels its Asterisk really has)."""

    def __init__(self, store: SlotStore, node: str, *, lease_s: float, owned: Callable[[], Collection[str]],
                 channel_up: ChannelUp) -> None:
        self._store = store
        self._node = node
        self._lease_s = lease_s
        self._owned = owned
        self._channel_up = channel_up
        self._unreleased: set[str] = set()  # released while PostgreSQL was unreachable: retried
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing = False

    async def take(self, user: SlotUser, channel_id: str) -> bool:
        try:
            taken = await self._store.take(user.user_id, self._node, channel_id, user.channel_limit, self._lease_s)
        except StoreError as exc:
            # A commercial limit is never a reason to cut a call the user could pay for: let it through.
            log.warning("line_channel_limit_unchecked", error=exc.message)
            return True
        self._unreleased.discard(channel_id)
        return taken

    async def release(self, user: SlotUser, channel_id: str) -> None:
        try:
            await self._store.release(self._node, [channel_id])
        except StoreError as exc:
            log.warning("line_channel_slot_release_failed", error=exc.message)
            self._unreleased.add(channel_id)

    # -- upkeep ------------------------------------------------------------------------------------

    async def run_heartbeat(self) -> None:
        """Renew this node's lease every third of it; free dead nodes' slots; retry failed releases."""
        while True:
            await self.beat()
            await asyncio.sleep(self._lease_s / 3)

    async def beat(self) -> None:
        try:
            freed = await self._store.heartbeat(self._node, self._lease_s)
            if self._unreleased:
                done = set(self._unreleased)
                await self._store.release(self._node, sorted(done))
                self._unreleased -= done
        except StoreError as exc:
            if not self._failing:
                log.warning("line_slots_heartbeat_failed", error=exc.message)
            self._failing = True
            return
        if self._failing:
            log.info("line_slots_heartbeat_restored")
        self._failing = False
        if freed:
            log.warning("line_slots_of_dead_nodes_freed", slots=freed, lease_s=self._lease_s)

    async def reconcile(self) -> int:
        """Free this node's slots whose channel no call owns and Asterisk no longer has (calls that ended
        while no engine of this node was running); returns how many were freed."""
        owned = set(self._owned())
        stale = [ch for ch in await self._store.node_channels(self._node)
                 if ch not in owned and not await self._channel_up(ch)]
        if stale:
            await self._store.release(self._node, stale)
            log.warning("line_slots_reconciled", freed=len(stale))
        return len(stale)

    async def _reconcile_logged(self) -> None:
        try:
            await self.reconcile()
        except StoreError as exc:
            log.warning("line_slots_reconcile_failed", error=exc.message)

    # -- CallEnds ----------------------------------------------------------------------------------

    def call_ended(self, ended: EndedCall) -> None:
        pass

    def resynced(self, recovered_s: Mapping[str, int]) -> None:
        task = asyncio.create_task(self._reconcile_logged(), name="line-slots-reconcile")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
