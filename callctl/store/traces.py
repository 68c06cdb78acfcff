"""Per-call flow traces, read back from the CDRs they ride on (``extra.trace`` of the inbound leg).

A trace has the CDR's retention and privacy treatment because it is part of the CDR row.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from callctl.store.db import translated


@translated("traces")
async def step_paths_since(db: Any, since: dt.datetime, *, limit: int = 100_000) -> list[list[tuple[str, str]]]:
    """(flow, step) paths of the calls started at or after ``since``, newest ``limit`` calls."""
    rows = await db.fetch(
        "SELECT extra->'trace' AS trace FROM cdr WHERE started_at >= $1 AND extra ? 'trace' "
        "ORDER BY started_at DESC LIMIT $2", since, limit)
    paths: list[list[tuple[str, str]]] = []
    for r in rows:
        trace = json.loads(r["trace"]) if isinstance(r["trace"], str) else r["trace"]
        paths.append([(str(t.get("flow", "")), str(t.get("step", ""))) for t in trace or []
                      if isinstance(t, dict)])
    return paths


def _plain(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if key == "extra" and isinstance(value, str):
            out[key] = json.loads(value)
    return out


@translated("traces")
async def call_view(db: Any, call_id: Any) -> dict[str, Any]:
    """Everything stored about one call: its legs' CDRs (trace and rating on them), its recordings,
    and the conference events of its legs. Empty lists when nothing is known."""
    cdrs = [_plain(r) for r in await db.fetch(
        "SELECT * FROM cdr WHERE call_id = $1 ORDER BY started_at, leg_id", call_id)]
    legs = [r["leg_id"] for r in cdrs]
    recordings = [dict(r) for r in await db.fetch(
        "SELECT id, source, conference_id, state, started_at, ended_at, duration_ms, location, legal_hold "
        "FROM recording WHERE call_id = $1 OR (conference_id IS NOT NULL AND conference_id::text = ANY($2::text[]) "
        "AND started_at <= $3 AND coalesce(ended_at, 'infinity') >= $4) ORDER BY started_at",
        call_id, [c["conference_id"] for c in cdrs if c.get("conference_id")],
        max((c["ended_at"] for c in cdrs), default=None), min((c["started_at"] for c in cdrs), default=None))]
    events = [dict(r) for r in await db.fetch(
        "SELECT conference_id, person, role, what, at, reason, leg_id FROM conference_event "
        "WHERE leg_id = ANY($1::uuid[]) ORDER BY at", legs)]
    return {"call_id": str(call_id), "cdrs": cdrs, "recordings": recordings, "conference_events": events}
