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
