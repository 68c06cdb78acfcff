"""Per-account facts the FastAGI gate reads on every call (country, dialer profile, destination
permissions, suspension): one statement to read them, and a cache with explicit invalidation.

PostgreSQL notifies channel ``callctl_account_facts`` with the account id at every change of those
facts, whoever writes them (migration 0019: triggers on the tables), so the cache holds with several
engines on one database. A cache that cannot hear those notifications serves nothing: while its
listener connection is down (or not yet up), every read goes to PostgreSQL, and it starts empty when
the listener is back (what changed meanwhile was not heard). Bound on staleness: a change is applied
when its notification arrives, normally well under a millisecond after the commit on one host; a
listener whose connection dies silently (no FIN) is noticed by its ping within ``ping_interval_s`` +
``ping_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg
import structlog

from callctl.fraud.rules import DEFAULT_PERMISSIONS, Permissions
from callctl.store.db import CONNECT_TIMEOUT_S, close_quietly, describe_url, translated
from callctl.store.fraud import ACCOUNT_SCOPE, _json

log = structlog.get_logger("callctl.store.facts")
_translated = translated("account facts")

CHANNEL = "callctl_account_facts"
LISTENER_APP_NAME = "callctl-facts-listener"

# One statement per decision (asyncpg prepares it once per connection and reuses it).
GATE_FACTS_SQL = (
    "SELECT a.country, coalesce(d.automated, false) AS automated, "
    f"(SELECT p.permissions FROM fraud_permission p WHERE p.account_id = a.id AND p.scope = '{ACCOUNT_SCOPE}') "
    "AS permissions, "
    "EXISTS (SELECT 1 FROM fraud_hold h WHERE h.account_id = a.id AND h.released_at IS NULL) AS suspended "
    "FROM account a LEFT JOIN account_dialer d ON d.account_id = a.id WHERE a.id = $1")


@dataclass(frozen=True, slots=True)
class GateFacts:
    country: str
    automated: bool  # the account's dialer profile says its calls are automated
    permissions: Permissions  # the account's destination permissions (its own row, else the defaults)
    suspended: bool  # an open fraud hold: outbound calls refused until an operator releases it


@_translated
async def read_gate_facts(db: Any, account_id: uuid.UUID) -> GateFacts | None:
    """The facts, from PostgreSQL, in one statement; None for an unknown account."""
    row = await db.fetchrow(GATE_FACTS_SQL, account_id)
    if row is None:
        return None
    perms = row["permissions"]
    return GateFacts(str(row["country"]).strip(), bool(row["automated"]),
                     DEFAULT_PERMISSIONS if perms is None else Permissions.from_json(_json(perms)),
                     bool(row["suspended"]))


async def _wait_for(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class AccountFactsCache:
    """``async with AccountFactsCache(url) as cache: await cache.gate_facts(pool, account_id)``.

    Starts with PostgreSQL down (reads fail as they would without a cache; the listener keeps trying)."""

    def __init__(self, database_url: str, *, max_entries: int = 100_000, ping_interval_s: float = 1.0,
                 ping_timeout_s: float = 2.0, retry_max_s: float = 5.0) -> None:
        self.database_url = database_url
        self.max_entries = max_entries
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.retry_max_s = retry_max_s
        self._entries: dict[uuid.UUID, GateFacts] = {}
        self._generation = 0  # bumped by every invalidation: a read that raced one is not kept
        self._listening = False
        self._lost = asyncio.Event()
        self._heard = asyncio.Event()  # set while listening
        self._deaf = asyncio.Event()  # set while not listening
        self._deaf.set()
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self.hits = 0
        self.misses = 0

    @property
    def listening(self) -> bool:
        """True while invalidations can be heard (the cache serves only then)."""
        return self._listening

    async def gate_facts(self, db: Any, account_id: uuid.UUID) -> GateFacts | None:
        if self._listening:
            hit = self._entries.get(account_id)
            if hit is not None:
                self.hits += 1
                return hit
        self.misses += 1
        generation = self._generation
        facts = await read_gate_facts(db, account_id)
        if facts is not None and self._listening and generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[account_id] = facts
        return facts

    async def wait_for_listening(self, timeout_s: float) -> bool:
        """True once invalidations can be heard; False if ``timeout_s`` passed first."""
        return await _wait_for(self._heard, timeout_s)

    async def wait_for_not_listening(self, timeout_s: float) -> bool:
        """True once the cache has stopped serving (listener lost); False if ``timeout_s`` passed first."""
        return await _wait_for(self._deaf, timeout_s)

    # -- invalidation --------------------------------------------------------------------------
    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._generation += 1
        if payload == "*":
            self._entries.clear()
            return
        try:
            self._entries.pop(uuid.UUID(payload), None)
        except ValueError:  # not an account id: forget everything rather than guess
            self._entries.clear()

    def _terminated(self, _conn: Any) -> None:
        self._off("the listener connection closed")

    def _off(self, why: str) -> None:
        self._generation += 1
        self._entries.clear()
        self._lost.set()
        self._heard.clear()
        self._deaf.set()
        if self._listening:
            self._listening = False
            self._down_since = time.monotonic()
            log.warning("account_facts_cache_off", reason=why, database=describe_url(self.database_url),
                        hint="gate decisions read PostgreSQL until the listener is back")

    def _on(self) -> None:
        self._generation += 1
        self._entries.clear()  # whatever changed while we could not hear it
        self._lost.clear()
        self._listening = True
        self._deaf.clear()
        self._heard.set()
        down_s = None if self._down_since is None else round(time.monotonic() - self._down_since, 3)
        log.info("account_facts_cache_on", database=describe_url(self.database_url), down_s=down_s)

    # -- the listener --------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        delay_s = 0.1
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.database_url, timeout=CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": LISTENER_APP_NAME})
                conn.add_termination_listener(self._terminated)
                await conn.add_listener(CHANNEL, self._notified)
                self._on()
                delay_s = 0.1
                while not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.ping_interval_s):
                            await self._lost.wait()
                    if self._lost.is_set() or conn.is_closed():
                        break
                    async with asyncio.timeout(self.ping_timeout_s):
                        await conn.execute("SELECT 1")
                self._off("the listener connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means: not listening, retry later
                self._off(f"{type(exc).__name__}: {exc}")
            finally:
                if conn is not None:
                    await close_quietly(conn, timeout_s=1.0)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.retry_max_s)

    async def __aenter__(self) -> AccountFactsCache:
        self._task = asyncio.get_running_loop().create_task(self._listen_loop(), name="account-facts-listener")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._listening = False
        self._entries.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
