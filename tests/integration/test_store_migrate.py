"""`callctl db migrate` and the cdr table on a real PostgreSQL 15."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from callctl.cli import main
from callctl.errors import MigrationError, StoreUnavailable
from callctl.store import cdrs
from callctl.store.db import connect, connect_pool
from callctl.store.migrate import migrate
from tests.support.postgres import MIGRATIONS, PostgresCluster, free_port
from tests.unit.test_cdr_spool import record

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_db(postgres: PostgresCluster) -> str:
    postgres.start()
    return postgres.new_database(f"m_{uuid.uuid4().hex[:12]}")


async def applied_versions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()


async def test_migrate_twice_applies_everything_once(empty_db: str) -> None:
    every = sorted(p.name[:4] for p in MIGRATIONS.glob("*.sql"))
    assert await migrate(empty_db, MIGRATIONS) == every
    assert await migrate(empty_db, MIGRATIONS) == []
    assert await applied_versions(empty_db) == every


async def test_two_concurrent_migrates_apply_each_file_once(empty_db: str) -> None:
    first, second = await asyncio.gather(migrate(empty_db, MIGRATIONS), migrate(empty_db, MIGRATIONS))
    assert sorted(first + second) == sorted(p.name[:4] for p in MIGRATIONS.glob("*.sql"))
    assert not (first and second)  # one run did all the work, the other waited and found nothing


def test_two_concurrent_cli_migrates_both_succeed(empty_db: str) -> None:
    env = {"CALLCTL_DATABASE_URL": empty_db, "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-m", "callctl", "db", "migrate"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(out.count("applied 0001_cdr.sql") for out, _ in outputs) == 1


async def test_an_applied_file_that_changed_is_refused(empty_db: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    await migrate(empty_db, directory)
    edited = directory / "0001_cdr.sql"
    edited.write_text(edited.read_text() + "\n-- harmless?\n")
    with pytest.raises(MigrationError) as err:
        await migrate(empty_db, directory)
    assert str(edited) in err.value.message and "changed" in err.value.message
    assert "new migration file" in err.value.message


async def test_a_failing_migration_applies_nothing_and_names_file_line_col(empty_db: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    bad = directory / "0099_broken.sql"
    bad.write_text("CREATE TABLE half_done (id int);\nCREATE TABLE broken (id int,,);\n")
    with pytest.raises(MigrationError) as err:
        await migrate(empty_db, directory)
    assert err.value.message.startswith(f"{bad}:2:")
    assert "0099" not in await applied_versions(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await conn.close()
    bad.unlink()
    assert await migrate(empty_db, directory) == []


def test_cli_with_unreachable_database_prints_one_line_naming_host_port(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("CALLCTL_DATABASE_URL", f"postgresql://callctl:s3cret@127.0.0.1:{port}/callctl")
    assert main(["db", "migrate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "connection refused" in err
    assert "s3cret" not in err and "Traceback" not in err


async def test_wrong_password_says_so() -> None:
    cluster = PostgresCluster.throwaway_cluster()
    cluster.start()
    try:
        cluster.psql("ALTER ROLE postgres PASSWORD 'right'")
        hba = cluster.data_dir / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        cluster.stop()  # a restart, not a reload: the new rules are in force when start() returns
        cluster.start()
        with pytest.raises(StoreUnavailable) as err:
            await connect(f"postgresql://postgres:wrong@127.0.0.1:{cluster.port}/postgres")
        assert "refused the password for user 'postgres'" in err.value.message
        assert "wrong" not in err.value.message
    finally:
        cluster.destroy()


async def test_connect_pool_to_nowhere_is_store_unavailable() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}.*connection refused"):
        await connect_pool(f"postgresql://x@127.0.0.1:{port}/x")


async def test_insert_is_idempotent_and_rows_round_trip(database_url: str) -> None:
    pool = await connect_pool(database_url)
    try:
        records = [record(i) for i in range(10)]
        assert await cdrs.insert_cdrs(pool, records) == 10
        assert await cdrs.insert_cdrs(pool, records) == 0
        assert await cdrs.insert_cdrs_copy(pool, [*records, record(10)]) == 1
        assert await cdrs.count(pool) == await cdrs.count_legs(pool) == 11
        assert await cdrs.fetch_by_call_id(pool, records[3].call_id) == [records[3]]
        billed = await pool.fetchval("SELECT billed_s FROM cdr WHERE leg_id = $1", records[3].leg_id)
        assert billed == records[3].billed_s == 62  # 61.001 s answered: rounded up
    finally:
        await pool.close()


async def test_a_month_without_partition_goes_to_default_then_moves_to_its_own(database_url: str) -> None:
    old = record(1, started_at=dt.datetime(2025, 1, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
                 answered_at=None, ended_at=dt.datetime(2025, 2, 1, 0, 0, 5, tzinfo=dt.UTC), disposition="NO ANSWER")
    conn = await connect(database_url)
    try:
        assert await cdrs.insert_cdrs(conn, [old]) == 1
        assert await conn.fetchval("SELECT count(*) FROM cdr_default") == 1
        assert await cdrs.ensure_partitions(conn, [old.started_at]) == ["cdr_2025m01"]
        assert await conn.fetchval("SELECT count(*) FROM cdr_default") == 0
        assert await conn.fetchval("SELECT count(*) FROM cdr_2025m01") == 1
        assert await cdrs.insert_cdrs(conn, [old]) == 0  # still one leg once
        assert "cdr_2025m01" in await cdrs.partitions(conn)
    finally:
        await conn.close()
