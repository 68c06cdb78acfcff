"""Day/night switch states and their log (SQL): what ``callctl dialplan switch`` writes and the
engine's ``when: {switch: ...}`` steps read (through ``PgSwitches``, a flows.switches.SwitchReader)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from callctl.flows.switches import SwitchState
from callctl.store.db import connection, translated

_translated = translated("switch store")


@_translated
async def states(db: Any) -> dict[str, SwitchState]:
    rows = await db.fetch("SELECT name, is_on, changed_by, changed_at FROM dialplan_switches")
    return {r["name"]: SwitchState(r["name"], r["is_on"], r["changed_by"], r["changed_at"]) for r in rows}


@_translated
async def flip(db: Any, name: str, on: bool, changed_by: str, reason: str | None = None) -> SwitchState:
    """Set the switch and log the change, in one transaction; returns the new state."""
    async with connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO dialplan_switches (name, is_on, changed_by) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET is_on = EXCLUDED.is_on, changed_by = EXCLUDED.changed_by, "
            "changed_at = now() RETURNING changed_at", name, on, changed_by)
        await conn.execute("INSERT INTO dialplan_switch_log (name, is_on, changed_by, changed_at, reason) "
                           "VALUES ($1, $2, $3, $4, $5)", name, on, changed_by, row["changed_at"], reason)
    return SwitchState(name, on, changed_by, row["changed_at"])


@_translated
async def history(db: Any, name: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT is_on, changed_by, changed_at, reason FROM dialplan_switch_log WHERE name = $1 "
                          "ORDER BY changed_at DESC, id DESC LIMIT $2", name, limit)
    return [{"on": r["is_on"], "by": r["changed_by"], "at": r["changed_at"].astimezone(dt.UTC).isoformat(),
             "reason": r["reason"]} for r in rows]


class PgSwitches:
    """The engine's ``SwitchReader``: reads the states from the daemon's pool at each ``when``."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def states(self) -> Mapping[str, SwitchState]:
        return await states(self._pool)
