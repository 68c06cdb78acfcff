"""Keeps Asterisk's copy of the pre-answered numbers (callctl.flows.preanswer) current: the whole set at
every ARI (re)connect, the changes at every dialplan reload, off when the engine stops taking calls.

Asterisk answers those calls in ``[callctl-preanswer]`` before ``Stasis()``, so a caller's answer never
waits for this engine's loop (docs/architecture.md "Answered by Asterisk")."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from callctl.errors import AriError
from callctl.flows.model import Dialplan
from callctl.flows.preanswer import AMI_GLOBAL, GENERATION_GLOBAL, buckets, preanswered_numbers
from callctl.logging import get_logger

log = get_logger("callctl.preanswer")


class GlobalVars(Protocol):
    """ARI ``POST /asterisk/variable`` (a dialplan global)."""

    async def set_global(self, name: str, value: str) -> None: ...


class PreAnswer:
    """The one owner of the CALLCTL_PREANSWER* and CALLCTL_PA_* globals of its Asterisk.

    A number is pre-answered while its bucket starts with the current generation token, so numbers a
    previous engine published and this one no longer lists are dead at once when the token changes
    (ARI cannot list globals to clear them). ``ami_user``: the engine's AMI login, which a cluster node checks
    before answering (empty: a cluster node never pre-answers)."""

    def __init__(self, ops: GlobalVars, plan: Callable[[], Dialplan], *, ami_user: str = "") -> None:
        self._ops = ops
        self._plan = plan
        self._ami_user = ami_user
        self._lock = asyncio.Lock()  # a reload waits for a publication in progress, and the other way round
        self._generation = ""
        self._published: frozenset[str] = frozenset()
        self._buckets: dict[str, str] = {}  # what Asterisk holds under the current token
        self.enabled = True

    @property
    def published(self) -> frozenset[str]:
        return self._published

    async def publish(self) -> None:
        """After every ARI (re)connect: pre-answering off, every number under a new token, then on."""
        async with self._lock:
            if not self.enabled:
                return
            started = time.monotonic()
            keys = preanswered_numbers(self._plan())
            generation = "g" + secrets.token_hex(4)
            written = buckets(keys, generation)
            try:
                # Off while numbers are written: Asterisk (or a previous engine's set) may be anything now.
                await self._ops.set_global(GENERATION_GLOBAL, "")
                self._generation, self._published, self._buckets = "", frozenset(), {}
                await self._ops.set_global(AMI_GLOBAL, self._ami_user)
                for name, value in written.items():
                    await self._ops.set_global(name, value)
                await self._ops.set_global(GENERATION_GLOBAL, generation)
            except AriError as exc:  # the next connect publishes again; meanwhile the engine answers
                log.warning("preanswer_not_published", error=exc.message)
                return
            self._generation, self._published, self._buckets = generation, keys, written
            log.info("preanswer_published", numbers=len(keys), globals=len(written),
                     ms=round((time.monotonic() - started) * 1000, 1))

    async def update(self) -> None:
        """After a dialplan reload: the numbers that now qualify get the token, those that no longer do lose it."""
        async with self._lock:
            if not self.enabled or not self._generation:
                return  # not published on this connection yet: the next publish() takes the new dialplan
            keys = preanswered_numbers(self._plan())
            added, removed = keys - self._published, self._published - keys
            written = buckets(keys, self._generation)
            changed = {name: value for name, value in written.items() if self._buckets.get(name) != value}
            emptied = [name for name in self._buckets if name not in written]
            try:
                for name in emptied:
                    await self._ops.set_global(name, "")
                    del self._buckets[name]
                for name, value in changed.items():
                    await self._ops.set_global(name, value)
                    self._buckets[name] = value
            except AriError as exc:  # what was written stays known; the next connect publishes everything
                log.warning("preanswer_not_updated", error=exc.message)
                return
            self._published = keys
            log.info("preanswer_updated", numbers=len(keys), added=len(added), removed=len(removed),
                     globals_written=len(changed) + len(emptied))

    async def withdraw(self) -> None:
        """The engine stops taking calls: Asterisk answers none itself from now (a cluster node refuses
        them with 503 again, so the proxy tries another node)."""
        self.enabled = False
        async with self._lock:
            try:
                await self._ops.set_global(GENERATION_GLOBAL, "")
            except AriError as exc:
                log.warning("preanswer_not_withdrawn", error=exc.message)
                return
            self._generation = ""
            log.info("preanswer_withdrawn")
