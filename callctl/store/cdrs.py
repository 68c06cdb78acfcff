"""CDR rows in PostgreSQL: idempotent batch insert (a replayed leg is skipped; a real CDR replaces an
incomplete one of the same leg) and the queries tests
and statements need. The writer's path sends the COPY text lines of callctl.cdr.copyline as they were
spooled; ``insert_cdrs`` (unnest) and ``insert_cdrs_copy`` (binary COPY) write CdrRecords directly."""

from __future__ import annotations

import datetime as dt
import json
import operator
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from callctl.errors import StoreError, StoreUnavailable
from callctl.store.db import close_quietly, connect, connection, describe_url, translated

_translated = translated("cdr store")
_connection = connection


# Column order shared by the insert paths (the COPY line's); ``billed_s`` is derived, the rest are CdrRecord fields.
COLUMNS = copyline.COLUMNS
_NAMES = ", ".join(name for name, _ in COLUMNS)
_UNNEST_ARGS = ", ".join(f"${i}::{'text' if kind == 'jsonb' else kind}[]" for i, (_, kind) in enumerate(COLUMNS, 1))
_UNNEST_SELECT = ", ".join(f"{name}::jsonb" if kind == "jsonb" else name for name, kind in COLUMNS)

# A leg already stored is skipped, except that a real CDR replaces an "incomplete" one of the same leg
# (recorded from the open-calls journal, or taken over from a dead node, while the real one waited in a
# spool): the real one wins whatever the order they arrive in. Within one statement a leg is taken once,
# its complete row first (ON CONFLICT DO UPDATE cannot touch a row twice).
_INCOMPLETE = """'{"incomplete": true}'::jsonb"""
_ONE_PER_LEG = f"DISTINCT ON (leg_id, started_at) {_NAMES}"
_ONE_PER_LEG_ORDER = f"ORDER BY leg_id, started_at, extra @> {_INCOMPLETE}"
_REPLACED = [name for name, _ in COLUMNS if name not in ("leg_id", "started_at")]
_REAL_WINS = (f"ON CONFLICT (leg_id, started_at) DO UPDATE SET ({', '.join(_REPLACED)}, written_at) = "
              f"({', '.join(f'EXCLUDED.{name}' for name in _REPLACED)}, now()) "
              f"WHERE cdr.extra @> {_INCOMPLETE} AND NOT EXCLUDED.extra @> {_INCOMPLETE}")
INSERT_UNNEST = (f"INSERT INTO cdr ({_NAMES}) SELECT {_ONE_PER_LEG} FROM (SELECT {_UNNEST_SELECT} "
                 f"FROM unnest({_UNNEST_ARGS}) AS t({_NAMES})) AS t {_ONE_PER_LEG_ORDER} {_REAL_WINS}")
_TEMP = "cdr_incoming"
_COPY_OPTIONS: dict[str, Any] = {"columns": list(copyline.COLUMN_NAMES), "format": "text"}
CREATE_TEMP = f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP} (LIKE cdr INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
INSERT_FROM_TEMP = f"INSERT INTO cdr ({_NAMES}) SELECT {_ONE_PER_LEG} FROM {_TEMP} {_ONE_PER_LEG_ORDER} {_REAL_WINS}"


def _extra_json(record: CdrRecord) -> str:
    # default=str: a stray non-JSON value in ``extra`` must not make the whole record unwritable.
    return orjson.dumps(record.extra, default=str, option=orjson.OPT_NON_STR_KEYS).decode() if record.extra else "{}"


_NAME_LIST = [name for name, _ in COLUMNS]
_BILLED = _NAME_LIST.index("billed_s")
_EXTRA = _NAME_LIST.index("extra")
# Every column but the two derived ones, read in one C-level call (this runs once per leg written).
_FIELDS = operator.attrgetter(*(name for name in _NAME_LIST if name not in ("billed_s", "extra")))


def row(record: CdrRecord) -> tuple[Any, ...]:
    """The record as a tuple in COLUMNS order (``extra`` as JSON text)."""
    values = list(_FIELDS(record))
    values.insert(_BILLED, record.billed_s)
    values.insert(_EXTRA, _extra_json(record))
    return tuple(values)


def _inserted(status: str) -> int:
    # "INSERT 0 <rows>"
    return int(status.rsplit(" ", 1)[-1])


@_translated
async def insert_cdrs(db: Any, records: Sequence[CdrRecord]) -> int:
    """Insert ``records`` in one statement; legs already stored are skipped. Returns the rows added.

    Raises StoreUnavailable (retry later: server down, table missing) or StoreError (a row is bad).
    """
    if not records:
        return 0
    columns = list(zip(*(row(r) for r in records), strict=True))
    status: str = await db.execute(INSERT_UNNEST, *columns)
    return _inserted(status)


@_translated
async def insert_cdrs_copy(db: Any, records: Sequence[CdrRecord]) -> int:
    """Same contract as insert_cdrs, through COPY into a temporary table then INSERT .. ON CONFLICT."""
    if not records:
        return 0
    async with _connection(db) as conn:
        return await _via_temp(conn, [row(r) for r in records])


async def _via_temp(conn: Any, rows: list[tuple[Any, ...]]) -> int:
    async with conn.transaction():
        await conn.execute(CREATE_TEMP)
        await conn.copy_records_to_table(_TEMP, records=rows, columns=_NAME_LIST)
        status: str = await conn.execute(INSERT_FROM_TEMP)
    return _inserted(status)


@_translated
async def insert_cdrs_fast(db: Any, records: Sequence[CdrRecord]) -> int:
    """Same contract as insert_cdrs, through ``insert_lines`` (the writer's path)."""
    return await insert_lines(db, [copyline.encode(r) for r in records])


@_translated
async def insert_lines(db: Any, lines: Sequence[bytes]) -> int:
    """Write COPY lines (``copyline.encode``) idempotently; returns the rows added. Fastest path first:
    COPY straight into cdr; a leg already stored (a spool replay after a lost ack, rare) makes that
    COPY fail on the primary key and keeps nothing of it, then the same bytes go through a temporary
    table and INSERT .. ON CONFLICT (skipped, or replacing an incomplete row: see _REAL_WINS). Not for use
    inside a transaction of the caller's (a failed COPY would abort it)."""
    if not lines:
        return 0
    # A memoryview, not bytes: asyncpg takes a bytes ``source`` for a file name.
    data = memoryview(b"".join(lines))
    async with _connection(db) as conn:
        try:
            # One statement, its own transaction: a failure keeps none of its rows (no BEGIN/COMMIT round trips).
            status: str = await conn.copy_to_table("cdr", source=data, **_COPY_OPTIONS)
            return _inserted(status)
        except asyncpg.UniqueViolationError:
            pass  # some legs are already stored
        async with conn.transaction():
            await conn.execute(CREATE_TEMP)
            await conn.copy_to_table(_TEMP, source=data, **_COPY_OPTIONS)
            status = await conn.execute(INSERT_FROM_TEMP)
        return _inserted(status)


@_translated
async def ensure_partitions(db: Any, moments: Iterable[dt.datetime]) -> list[str]:
    """Create the monthly partitions holding ``moments`` (and move their rows out of DEFAULT)."""
    months = sorted(_months(moments))
    return [str(await db.fetchval("SELECT cdr_ensure_partition($1)", month)) for month in months]


@_translated
async def count(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM cdr"))


@_translated
async def count_legs(db: Any) -> int:
    """Distinct legs stored (equal to ``count`` unless a leg was written twice)."""
    return int(await db.fetchval("SELECT count(DISTINCT leg_id) FROM cdr"))


@_translated
async def leg_ids(db: Any) -> set[uuid.UUID]:
    return {r["leg_id"] for r in await db.fetch("SELECT leg_id FROM cdr")}


@_translated
async def fetch_by_call_id(db: Any, call_id: uuid.UUID) -> list[CdrRecord]:
    rows = await db.fetch(f"SELECT {_NAMES} FROM cdr WHERE call_id = $1 ORDER BY started_at, leg_id", call_id)
    return [_record(r) for r in rows]


@_translated
async def partitions(db: Any) -> list[str]:
    """The partitions of cdr, by name (``cdr_YYYYmMM`` and ``cdr_default``)."""
    rows = await db.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                          "WHERE i.inhparent = 'cdr'::regclass ORDER BY 1")
    return [r["relname"] for r in rows]


def _record(r: Any) -> CdrRecord:
    data = {name: r[name] for name, _ in COLUMNS if name != "billed_s"}
    data["extra"] = json.loads(data["extra"]) if isinstance(data["extra"], str) else data["extra"]
    try:
        return CdrRecord(**data)
    except TypeError as exc:
        raise StoreError(f"cdr row for leg {r['leg_id']} does not match CdrRecord: {exc}") from None


class PgCdrStore:
    """The CDR writer's PostgreSQL side: one connection, reopened after a failure, partitions created
    for the months it writes. Implements ``callctl.cdr.writer.CdrStore``."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.description = describe_url(database_url)
        self._conn: Any = None
        self._months: set[dt.datetime] = set()

    async def connect(self) -> None:
        """A live connection (no-op when one is open); StoreUnavailable otherwise."""
        if self._conn is not None and not self._conn.is_closed():
            return
        self._conn = None
        conn = await connect(self.database_url)
        now = dt.datetime.now(dt.UTC)
        try:
            await self._ensure(conn, [now, now + dt.timedelta(days=31)])
        except StoreError:
            await close_quietly(conn)
            raise
        self._conn = conn

    async def insert(self, records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int:
        """insert_lines on the store's connection; on StoreUnavailable the connection is dropped."""
        await self.connect()
        try:
            await self._ensure(self._conn, [r.started_at for r in records])
            # Straight COPY measured fastest; a replayed leg falls back to ON CONFLICT (bench/cdr_pipeline.py).
            return await insert_lines(self._conn, lines)
        except StoreUnavailable:
            await self.close()
            raise

    async def _ensure(self, conn: Any, moments: Iterable[dt.datetime]) -> None:
        months = _months(moments) - self._months
        if months:
            await ensure_partitions(conn, months)
            self._months |= months

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        await close_quietly(conn)


def _months(moments: Iterable[dt.datetime]) -> set[dt.datetime]:
    """First instants of the UTC months holding ``moments`` (CdrRecord timestamps are UTC already, so a
    batch of thousands costs a set of (year, month) pairs)."""
    pairs = {(t.year, t.month) if t.tzinfo is dt.UTC else ((u := t.astimezone(dt.UTC)).year, u.month)
             for t in moments}
    return {dt.datetime(y, m, 1, tzinfo=dt.UTC) for y, m in pairs}
