"""Migration 0028 on a real PostgreSQL: the retired `recording_request` table (nothing has written it since
`conference record` went through conference_command, migration 0026) is dropped by `callctl db migrate`,
rows an older command line left included; the migration is applied once, and its SQL run again is harmless."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from callctl.store.migrate import migrate
from tests.support.postgres import MIGRATIONS, PostgresCluster

pytestmark = pytest.mark.integration

DROP = MIGRATIONS / "0028_drop_recording_request.sql"


async def test_migrate_drops_recording_request_once_and_the_migration_can_run_again(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    postgres.start()
    url = postgres.new_database(f"m_{uuid.uuid4().hex[:12]}")
    before = tmp_path / "before"  # the schema as the previous release left it
    before.mkdir()
    for path in MIGRATIONS.glob("*.sql"):
        if path.name < DROP.name:
            shutil.copy(path, before)
    await migrate(url, before)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO recording_request (conference_id, action, expires_at) "
                           "VALUES ($1, 'start', now() + interval '1 minute')", uuid.uuid4())
        assert await migrate(url, MIGRATIONS) == sorted(p.name[:4] for p in MIGRATIONS.glob("*.sql")
                                                        if p.name >= DROP.name)
        assert await conn.fetchval("SELECT to_regclass('recording_request')") is None
        assert await migrate(url, MIGRATIONS) == []  # applied once
        await conn.execute(DROP.read_text())  # re-runnable by hand as well
        assert await conn.fetchval("SELECT to_regclass('recording_request')") is None
    finally:
        await conn.close()
