"""The open-calls journal's rows in PostgreSQL (``open_call``, migrations/0020_global_rules.sql): written
in batches by the journal's mirror (callctl.cdr.journal), read back at start and by the node takeover."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from callctl.cdr.journal import OpenCall
from callctl.store.db import connection as _connection
from callctl.store.db import translated

_translated = translated("open-calls journal store")


def _entry(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)


@_translated
async def apply(db: Any, node: str, ops: Sequence[dict[str, Any]]) -> None:
    """The journal's operations (``op`` open / answer / dial / close), in order, in one transaction."""
    async with _connection(db) as conn, conn.transaction():
        for item in ops:
            leg = uuid.UUID(item["leg"])
            if item["op"] == "open":
                entry = {k: v for k, v in item.items() if k != "op"}
                await conn.execute(
                    "INSERT INTO open_call (leg_id, node_id, started_at, entry) VALUES ($1, $2, $3, $4::jsonb) "
                    "ON CONFLICT (leg_id) DO UPDATE SET node_id = EXCLUDED.node_id, closed_at = NULL, "
                    "entry = open_call.entry || EXCLUDED.entry, updated_at = now()",
                    leg, node, dt.datetime.fromisoformat(item["started_at"]), json.dumps(entry))
            elif item["op"] == "answer":
                await conn.execute("UPDATE open_call SET entry = entry || jsonb_build_object('answered_at', $2::text), "
                                   "updated_at = now() WHERE leg_id = $1", leg, item["at"])
            elif item["op"] == "dial":
                await conn.execute(
                    "UPDATE open_call SET entry = jsonb_set(entry, '{dialled}', "
                    "coalesce(entry->'dialled', '[]'::jsonb) || to_jsonb($2::text)), updated_at = now() "
                    "WHERE leg_id = $1", leg, item["channel"])
            elif item["op"] == "close":
                await conn.execute("UPDATE open_call SET closed_at = coalesce(closed_at, $2::timestamptz), "
                                   "updated_at = now() WHERE leg_id = $1", leg, dt.datetime.fromisoformat(item["at"]))


_ROW = """SELECT o.leg_id, o.node_id, o.entry, o.closed_at, n.heartbeat_at
            FROM open_call o LEFT JOIN engine_node n ON n.node_id = o.node_id"""


def _open_call(row: Any) -> OpenCall:
    return OpenCall(str(row["leg_id"]), row["node_id"], _entry(row["entry"]), row["closed_at"], row["heartbeat_at"])


@_translated
async def node_calls(db: Any, node: str) -> list[OpenCall]:
    """The rows of ``node`` whose CDR is not in the cdr table (open, or closed with the CDR not yet in)."""
    rows = await db.fetch(f"""{_ROW} WHERE o.node_id = $1 AND NOT EXISTS (
                                SELECT 1 FROM cdr c WHERE c.leg_id = o.leg_id AND c.started_at = o.started_at)""",
                          node)
    return [_open_call(r) for r in rows]


@_translated
async def drop_recorded(db: Any) -> int:
    """Delete the rows whose CDR reached the cdr table (a call's CDR is written once it is over: a row its
    engine could not mark closed before it died goes too); returns how many."""
    res = await db.execute("""DELETE FROM open_call o WHERE EXISTS (
                                SELECT 1 FROM cdr c WHERE c.leg_id = o.leg_id AND c.started_at = o.started_at)""")
    return int(res.split()[-1])


@_translated
async def claim_dead_nodes(db: Any, node: str, takeover_s: float) -> list[OpenCall]:
    """Take over the rows of nodes whose engine has not renewed its heartbeat for ``takeover_s``
    (only one engine gets each row); returned with the dead node's last heartbeat."""
    rows = await db.fetch(
        """WITH dead AS (
               SELECT node_id, heartbeat_at FROM engine_node
                WHERE node_id <> $1 AND heartbeat_at < clock_timestamp() - make_interval(secs => $2)),
           taken AS (
               SELECT o.leg_id, o.closed_at AS was_closed FROM open_call o JOIN dead d ON d.node_id = o.node_id
                WHERE NOT EXISTS (SELECT 1 FROM cdr c WHERE c.leg_id = o.leg_id AND c.started_at = o.started_at)
                FOR UPDATE OF o SKIP LOCKED)
           UPDATE open_call o SET node_id = $1, closed_at = clock_timestamp(), updated_at = now()
             FROM taken t, dead d
            WHERE o.leg_id = t.leg_id AND d.node_id = o.node_id
        RETURNING o.leg_id, d.node_id, o.entry, t.was_closed AS closed_at, d.heartbeat_at""",
        node, takeover_s)
    return [_open_call(r) for r in rows]


__all__ = ["OpenCall", "apply", "claim_dead_nodes", "drop_recorded", "node_calls"]
