"""The open-calls journal's rows in PostgreSQL (``open_call``, migrations/0020_global_rules.sql): written
in batches by the journal's mirror (callctl.cdr.journal), read back at start and by the node takeover."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from callctl.cdr.journal import OpenCall
from callctl.store.db import translated

_translated = translated("open-calls journal store")


def _entry(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)


def _fold(ops: Sequence[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
    """The operations of a batch folded per leg, in order, into what one statement writes: ``opened`` (an
    ``open`` among them: the row is upserted), ``started_at``, ``patch`` (keys merged into the entry),
    ``appends`` (legs dialled, appended to the entry's ``dialled`` after the patch), ``closed_at`` (an
    opened row's closed_at; else the close time kept unless the row already has one)."""
    legs: dict[uuid.UUID, dict[str, Any]] = {}
    for item in ops:
        leg = uuid.UUID(item["leg"])
        state = legs.setdefault(leg, {"opened": False, "started_at": None, "patch": {}, "appends": [],
                                      "closed_at": None})
        op = item["op"]
        if op == "open":
            entry = {k: v for k, v in item.items() if k != "op"}
            state.update(opened=True, started_at=dt.datetime.fromisoformat(item["started_at"]), closed_at=None)
            state["patch"].update(entry)
            if "dialled" in entry:  # the open's list replaces the row's: later dials extend it
                state["patch"]["dialled"] = list(entry["dialled"] or [])
                state["appends"] = []
        elif op == "answer":
            state["patch"]["answered_at"] = item["at"]
        elif op == "dial":
            if "dialled" in state["patch"]:
                state["patch"]["dialled"] = [*state["patch"]["dialled"], item["channel"]]
            else:
                state["appends"].append(item["channel"])
        elif op == "close" and state["closed_at"] is None:
            state["closed_at"] = dt.datetime.fromisoformat(item["at"])
    return legs


def _with_appends(entry: str, appends: str) -> str:
    """SQL: ``entry`` with the jsonb array ``appends`` added to its ``dialled`` list."""
    return (f"CASE WHEN jsonb_array_length({appends}) = 0 THEN {entry} ELSE jsonb_set({entry}, '{{dialled}}', "
            f"coalesce(({entry})->'dialled', '[]'::jsonb) || {appends}) END")


_APPLY = f"""WITH u AS (
    SELECT * FROM unnest($2::uuid[], $3::boolean[], $4::timestamptz[], $5::jsonb[], $6::jsonb[], $7::timestamptz[])
        AS u(leg, opened, started_at, patch, appends, closed_at)),
opened AS (
    INSERT INTO open_call AS o (leg_id, node_id, started_at, entry, closed_at)
    SELECT u.leg, $1, u.started_at, {_with_appends("u.patch", "u.appends")}, u.closed_at FROM u WHERE u.opened
    ON CONFLICT (leg_id) DO UPDATE SET node_id = EXCLUDED.node_id, closed_at = EXCLUDED.closed_at,
        entry = (SELECT {_with_appends("o.entry || u.patch", "u.appends")} FROM u WHERE u.leg = EXCLUDED.leg_id),
        updated_at = now()
    RETURNING 1)
UPDATE open_call o SET entry = {_with_appends("o.entry || u.patch", "u.appends")},
       closed_at = coalesce(o.closed_at, u.closed_at), updated_at = now()
  FROM u WHERE o.leg_id = u.leg AND NOT u.opened"""


@_translated
async def apply(db: Any, node: str, ops: Sequence[dict[str, Any]]) -> None:
    """The journal's operations (``op`` open / answer / dial / close), in order: folded per leg and written
    in one statement (one round trip per batch, whatever its size)."""
    legs = _fold(ops)
    if not legs:
        return
    states = list(legs.values())
    await db.execute(_APPLY, node, list(legs), [s["opened"] for s in states], [s["started_at"] for s in states],
                     [json.dumps(s["patch"]) for s in states], [json.dumps(s["appends"]) for s in states],
                     [s["closed_at"] for s in states])


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
