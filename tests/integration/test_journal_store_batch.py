"""The open-calls journal's batches on a real PostgreSQL (issue 17): a batch is folded per leg and written in
one statement, and leaves exactly the rows the former statement-per-operation writes left, for any split
of the same operations into batches."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any

import asyncpg
import pytest

from callctl.store import journal as journal_store

pytestmark = pytest.mark.integration


async def reference_apply(conn: asyncpg.Connection, node: str, ops: list[dict[str, Any]]) -> None:
    """What ``apply`` did before (one statement per operation, in order): the reference."""
    async with conn.transaction():
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


def operations(rng: random.Random, legs: int) -> list[dict[str, Any]]:
    """Journal operations as engines write them: each leg opened first, then answers, dials, closes, and
    now and then opened again (an adopted call re-sent by ``share``, with or without its dialled list)."""
    base = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    ids = [str(uuid.uuid4()) for _ in range(legs)]
    ops: list[dict[str, Any]] = [{"op": "open", "leg": leg, "call": leg, "channel": f"ch-{n}",
                                  "started_at": (base + dt.timedelta(seconds=n)).isoformat(), "caller": "+3361"}
                                 for n, leg in enumerate(ids)]
    for step in range(legs * 6):
        n = rng.randrange(legs)
        leg, at = ids[n], (base + dt.timedelta(seconds=100 + step)).isoformat()
        kind = rng.choice(["answer", "dial", "dial", "close", "close", "open"])
        if kind == "answer":
            ops.append({"op": "answer", "leg": leg, "at": at})
        elif kind == "dial":
            ops.append({"op": "dial", "leg": leg, "channel": f"leg-{step}"})
        elif kind == "close":
            ops.append({"op": "close", "leg": leg, "at": at})
        else:
            again: dict[str, Any] = {"op": "open", "leg": leg, "call": leg, "channel": f"ch-{n}",
                                     "started_at": (base + dt.timedelta(seconds=n)).isoformat(), "answered_at": at}
            if rng.random() < 0.5:
                again["dialled"] = [f"kept-{step}"]
            ops.append(again)
    return ops


async def table(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch("SELECT leg_id, node_id, started_at, entry, closed_at FROM open_call ORDER BY leg_id")
    return [(r["leg_id"], r["node_id"], r["started_at"], json.loads(r["entry"]), r["closed_at"]) for r in rows]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batches_written_in_one_statement_leave_the_rows_one_statement_per_operation_left(
        database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    ops = operations(rng, legs=12)
    conn = await asyncpg.connect(database_url)
    try:
        await reference_apply(conn, "a", ops)
        expected = await table(conn)
        assert any(e[3].get("dialled") for e in expected) and any(e[4] for e in expected)  # the test covers them
        for split in range(4):
            await conn.execute("DELETE FROM open_call")
            start = 0
            while start < len(ops):
                size = 1 if split == 0 else rng.randint(1, 40)
                await journal_store.apply(conn, "a", ops[start:start + size])
                start += size
            assert await table(conn) == expected, f"split {split}"
    finally:
        await conn.close()


class Counting:
    """A connection that counts the statements sent through it (each one a round trip)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "transaction"):
            self.statements += 1
        return getattr(self.conn, name)


async def test_a_batch_is_one_statement_whatever_its_size(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        counting = Counting(conn)
        ops = operations(random.Random(7), legs=50)
        await journal_store.apply(counting, "a", ops)
        assert len(ops) > 300 and counting.statements == 1  # it was one per operation, in a transaction
    finally:
        await conn.close()
