"""SIP brute-force blocking at the edge: Asterisk's failed-authentication events (AMI) are counted per
source address; an address over the threshold is blocked in PostgreSQL (shared by every node) and every
engine keeps its Asterisk's PJSIP ACL (pjsip_blocked.conf, category callctl-blocked) equal to the active
blocks: rewritten over AMI when a block starts, expires or is lifted, and after every AMI (re)login."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from callctl.ami.client import AmiClient, SecurityEvent
from callctl.errors import AmiError, StoreError
from callctl.fraud.bruteforce import FAILURE_EVENTS, BlockPolicy, FailureCounter, event_address, is_trusted
from callctl.fraud.settings import block_policy
from callctl.logging import get_logger
from callctl.metrics import Metrics
from callctl.store import fraud as store

log = get_logger("callctl.fraud")

ACL_FILE = "pjsip_blocked.conf"
ACL_CATEGORY = "callctl-blocked"
# An ACL with no rule is refused by nothing, but keep one harmless entry so the object always parses.
PLACEHOLDER_DENY = "0.0.0.0/32"
AMI_LOGIN_WARNING_S = 10.0
SYNC_INTERVAL_S = 2.0  # expiries, lifts (callctl fraud unblock) and other nodes' blocks are seen this fast


class ConfigWriter(Protocol):
    async def update_config(self, filename: str, category: str, values: list[tuple[str, str]], *,
                            reload_module: str) -> None: ...


def acl_values(addresses: list[str]) -> list[tuple[str, str]]:
    """The PJSIP ``type=acl`` object denying ``addresses`` (host routes), in a stable order."""
    denies = [f"{a}/128" if ":" in a else f"{a}/32" for a in sorted(addresses)]
    return [("type", "acl"), *(("deny", d) for d in [PLACEHOLDER_DENY, *denies])]


class EdgeBlocker:
    def __init__(self, pool: Any, policy: BlockPolicy, metrics: Metrics | None = None) -> None:
        self._pool = pool
        self.policy = policy
        self._counter = FailureCounter(policy)
        self._metrics = metrics
        self._pending: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        self._applied: list[str] | None = None  # addresses in the ACL Asterisk has now (None: unknown)
        self._wake = asyncio.Event()
        self._failing = False
        if metrics is not None:
            metrics.counter("callctl_sip_auth_failures_total", "Failed SIP authentications reported by Asterisk")
            metrics.counter("callctl_sip_blocks_total", "SIP source addresses blocked after repeated failures")

    def on_event(self, event: SecurityEvent) -> None:
        """From the AMI reader (sync, no await): count a failure; over the threshold, queue a block."""
        if event.name not in FAILURE_EVENTS:
            return
        address = event_address(event.remote)
        if address is None:
            return
        if self._metrics is not None:
            self._metrics.inc("callctl_sip_auth_failures_total")
        failures = self._counter.failure(address, time.monotonic())
        if failures is not None:
            self._pending.put_nowait((address, failures, f"{failures} failed SIP authentications "
                                                         f"({event.name}, last for '{event.account}') in "
                                                         f"{self.policy.window_s:g} s"))
            self._wake.set()

    def reapply(self) -> None:
        """Asterisk may have restarted (AMI logged in again): write the ACL again."""
        self._applied = None
        self._wake.set()

    async def run(self, writer: ConfigWriter) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SYNC_INTERVAL_S)
            self._wake.clear()
            try:
                await self.sync(writer)
            except (StoreError, AmiError) as exc:
                if not self._failing:
                    log.warning("sip_blocks_sync_failed", error=exc.message)
                self._failing = True
            except Exception as exc:  # a bug must not stop the blocking for the daemon's lifetime
                log.error("sip_blocks_sync_crashed", error=repr(exc), exc_info=True)
                self._failing = True
            else:
                if self._failing:
                    log.info("sip_blocks_sync_recovered")
                self._failing = False

    async def sync(self, writer: ConfigWriter) -> None:
        """Record the queued blocks, then make Asterisk's ACL equal to the active blocks."""
        while not self._pending.empty():
            address, failures, reason = self._pending.get_nowait()
            if is_trusted(address, self.policy.trusted):
                continue
            try:
                block = await store.add_block(self._pool, address, failures, reason, self.policy.block_s,
                                              self.policy.max_block_s)
            except StoreError:
                self._pending.put_nowait((address, failures, reason))  # kept for the next try
                raise
            log.warning("sip_address_blocked", address=address, failures=failures, until=block.until.isoformat(),
                        reason=reason)
            if self._metrics is not None:
                self._metrics.inc("callctl_sip_blocks_total")
        active = sorted({b.address for b in await store.active_blocks(self._pool)
                         if not is_trusted(b.address, self.policy.trusted)})
        if active != self._applied:
            await writer.update_config(ACL_FILE, ACL_CATEGORY, acl_values(active), reload_module="res_pjsip.so")
            log.info("sip_acl_applied", blocked=len(active), added=sorted(set(active) - set(self._applied or [])),
                     removed=sorted(set(self._applied or []) - set(active)))
            self._applied = active


@contextlib.asynccontextmanager
async def edge_guard(settings: Any, pool: Any, metrics: Metrics | None = None) -> AsyncIterator[EdgeBlocker | None]:
    """The blocker and its AMI connection for the daemon's lifetime (nothing without ``ami_address``)."""
    if not settings.ami_address:
        yield None
        return
    blocker = EdgeBlocker(pool, block_policy(settings), metrics)
    host, _, port = settings.ami_address.rpartition(":")
    async with AmiClient(host or "127.0.0.1", int(port), settings.ami_user, settings.ami_password,
                         blocker.on_event, on_login=blocker.reapply) as ami:
        task = asyncio.create_task(_run_when_logged_in(blocker, ami, settings.ami_address), name="sip-edge-blocker")
        try:
            yield blocker
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _run_when_logged_in(blocker: EdgeBlocker, ami: AmiClient, address: str) -> None:
    try:
        await asyncio.wait_for(ami.logged_in.wait(), AMI_LOGIN_WARNING_S)
    except TimeoutError:  # refused, wrong password or AMI off: said once, then keep waiting (it reconnects)
        log.warning("ami_not_logged_in", address=address, waited_s=AMI_LOGIN_WARNING_S,
                    hint="check ami_address, ami_user, ami_password and Asterisk's manager.conf")
        await ami.logged_in.wait()
    await blocker.run(ami)
