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

import uuid
from dataclasses import dataclass
from typing import Any

from callctl.fraud.rules import DEFAULT_PERMISSIONS, Permissions
from callctl.store.db import translated
from callctl.store.fraud import ACCOUNT_SCOPE, _json
from callctl.store.listen import ListeningCache

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


class AccountFactsCache(ListeningCache):
    """``async with AccountFactsCache(url) as cache: await cache.gate_facts(pool, account_id)``.

    Starts with PostgreSQL down (reads fail as they would without a cache; the listener keeps trying)."""

    channel = CHANNEL
    app_name = LISTENER_APP_NAME
    event = "account_facts_cache"
    hint = "gate decisions read PostgreSQL until the listener is back"

    def __init__(self, database_url: str, *, max_entries: int = 100_000, ping_interval_s: float = 1.0,
                 ping_timeout_s: float = 2.0, retry_max_s: float = 5.0) -> None:
        super().__init__(database_url, ping_interval_s=ping_interval_s, ping_timeout_s=ping_timeout_s,
                         retry_max_s=retry_max_s)
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, GateFacts] = {}
        self.hits = 0
        self.misses = 0

    async def gate_facts(self, db: Any, account_id: uuid.UUID) -> GateFacts | None:
        if self.listening:
            hit = self._entries.get(account_id)
            if hit is not None:
                self.hits += 1
                return hit
        self.misses += 1
        generation = self.generation
        facts = await read_gate_facts(db, account_id)
        if facts is not None and self.listening and generation == self.generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[account_id] = facts
        return facts

    # -- invalidation --------------------------------------------------------------------------
    def heard(self, payload: str) -> None:
        if payload == "*":
            self._entries.clear()
            return
        try:
            self._entries.pop(uuid.UUID(payload), None)
        except ValueError:  # not an account id: forget everything rather than guess
            self._entries.clear()

    def forget(self) -> None:
        self._entries.clear()
