"""The daemon's connection pool: lazy, so the engine starts (and takes calls) with PostgreSQL down."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg


async def _keep_session(_conn: Any) -> None:
    """Nothing to reset: the daemon's queries leave no session state (no SET, LISTEN, cursor or
    session advisory lock; migrations use their own connection). asyncpg still rolls back an open
    transaction; skipping its RESET ALL query saves a round trip on every use of the pool."""


@contextlib.asynccontextmanager
async def lazy_pool(database_url: str, *, max_size: int = 8) -> AsyncIterator[Any]:
    """No connection is opened until first use; each use reconnects if the server came back."""
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=max_size, command_timeout=10,
                                     max_inactive_connection_lifetime=60, reset=_keep_session)
    try:
        yield pool
    finally:
        with contextlib.suppress(Exception):
            await asyncpg.Pool.close(pool)
