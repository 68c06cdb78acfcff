"""Schema migrations: plain SQL files ``NNNN_name.sql`` applied in order, each once, each in its own
transaction, under an advisory lock, with a checksum so an edited applied file is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any

import asyncpg

from callctl.errors import MigrationError
from callctl.store.db import close_quietly, connect, translate

# pg_advisory_lock key serialising concurrent `callctl db migrate` runs ("callmigr").
MIGRATION_LOCK = 0x63616C6C6D696772
FILE_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    sql: str
    checksum: str


def default_directory() -> Path:
    """``migrations/`` next to the package in a source checkout."""
    import callctl

    return Path(callctl.__file__).resolve().parent.parent / "migrations"


def discover(directory: Path) -> list[Migration]:
    """The migration files in version order; a stray or duplicate name is a MigrationError."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no migrations directory there: pass --dir DIR")
    found: dict[str, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql (e.g. 0003_rates.sql)")
        version, name = match.groups()
        if version in found:
            raise MigrationError(f"{path}: version {version} is also used by {found[version].path.name}")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise MigrationError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            sql = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        found[version] = Migration(version, name, path, sql, hashlib.sha256(raw).hexdigest())
    return [found[v] for v in sorted(found)]


async def migrate(database_url: str, directory: Path) -> list[str]:
    """Apply the pending migrations; return the versions applied by this run (empty: up to date).

    Concurrent runs are safe: the second waits for the advisory lock, then finds nothing to do.
    """
    migrations = discover(directory)
    conn = await connect(database_url, command_timeout_s=600.0)
    applied_now: list[str] = []
    try:
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            # Created under the lock: two concurrent CREATE TABLE IF NOT EXISTS can still collide.
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        except Exception as exc:
            raise translate(exc, database_url, "reading schema_migrations") from None
        applied = {row["version"]: (row["name"], row["checksum"]) for row in rows}
        for m in migrations:
            if m.version in applied and applied[m.version][1] != m.checksum:
                raise MigrationError(
                    f"{m.path}: already applied as version {m.version} ({applied[m.version][0]}) but the file "
                    f"changed since (checksum {applied[m.version][1][:12]} applied, {m.checksum[:12]} now): "
                    "restore it and put the change in a new migration file")
        for m in migrations:
            if m.version not in applied:
                await _apply(conn, database_url, m)
                applied_now.append(m.version)
    finally:
        # Closing the session releases the advisory lock even if the unlock cannot be sent.
        await close_quietly(conn)
    return applied_now


async def _apply(conn: Any, database_url: str, m: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                               m.version, m.name, m.checksum)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, asyncpg.PostgresConnectionError) or getattr(exc, "sqlstate", "").startswith("57"):
            raise translate(exc, database_url, f"applying {m.path.name}") from None
        raise MigrationError(f"{_where(m, exc)}: {exc.__class__.__name__}: {exc}: nothing of {m.path.name} "
                             "was applied (fix the file and run `callctl db migrate` again)") from None
    except Exception as exc:
        raise translate(exc, database_url, f"applying {m.path.name}") from None


def _where(m: Migration, exc: Any) -> str:
    """``file:line:col`` when the server reports a character position (syntax errors)."""
    position = getattr(exc, "position", None)
    try:
        offset = int(position) - 1 if position else -1
    except ValueError:
        offset = -1
    if offset < 0:
        return str(m.path)
    before = m.sql[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return f"{m.path}:{line}:{col}"
