"""A real PostgreSQL 15 for tests (pytest plugin) and for `make run` (command line).

Fixtures: ``postgres`` (session: a throwaway cluster on a free port, fsync on, stopped and removed at
the end) and ``database_url`` (per test: a fresh database copied from a migrated template, made once).

Command line (used by scripts/run.py; idempotent, reuses an existing cluster directory):
    python -m tests.support.postgres start DIR PORT   # prints the callctl database URL last
    python -m tests.support.postgres stop DIR
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
MIGRATIONS = REPO / "migrations"
OS_USER = "postgres"


def free_port() -> int:
    from scripts.devstack import free_port as listen_port  # the one port picker (outside the ephemeral range)

    return listen_port()


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    # Debian keeps the server binaries off PATH.
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(f"PostgreSQL binary '{name}' not found on PATH nor in /usr/lib/postgresql/*/bin")


class PostgresCluster:
    """One PostgreSQL cluster under ``root`` (data/, run/ for the socket, log/), run as the postgres OS
    user when we are root (initdb and postgres refuse to run as root)."""

    def __init__(self, root: Path, port: int, *, throwaway: bool = False) -> None:
        self.root = root
        self.port = port
        self.throwaway = throwaway
        self.data_dir = root / "data"
        self.socket_dir = root / "run"
        self.log_file = root / "log" / "postgres.log"
        self.as_root = os.geteuid() == 0
        self._lock = threading.Lock()

    # -- URLs ----------------------------------------------------------------------------------
    def url_for(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    # -- processes -----------------------------------------------------------------------------
    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", OS_USER, "--", *args] if self.as_root else list(args)

    def _run(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout_s, check=False)

    def _owned_dirs(self) -> None:
        for d in (self.root, self.data_dir, self.socket_dir, self.log_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            pw = pwd.getpwnam(OS_USER)
            for d in (self.data_dir, self.socket_dir, self.log_file.parent):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            if self.throwaway:
                os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)

    def init(self) -> None:
        """initdb unless the data directory already holds a cluster."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._owned_dirs()
        args = [_binary("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C"]
        if self.throwaway:
            args.append("--no-sync")  # initdb's own final sync only; the server runs with fsync on
        out = self._run(*args)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.data_dir}:\n{out.stdout}\n{out.stderr}")

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "status").returncode == 0

    def running_port(self) -> int | None:
        """The port of the server running on this data directory (postmaster.pid line 4)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def start(self, *, timeout_s: float = 60.0) -> None:
        """Start (no-op if running) and wait until it accepts connections."""
        with self._lock:
            if self.running():
                self.wait_until_ready(timeout_s)
                return
            self.init()
            self._owned_dirs()
            options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=on "
                       "-c synchronous_commit=on -c max_connections=200")
            out = self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                            "-w", "-t", str(int(timeout_s)), "start", timeout_s=timeout_s + 10)
            if out.returncode != 0:
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{out.stdout}{out.stderr}\n"
                                   f"{self._log_tail()}")
            self.wait_until_ready(timeout_s)

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            ready = subprocess.run([_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                                    "-U", "postgres", "-d", "postgres"], check=False, timeout=10)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on 127.0.0.1:{self.port} not ready after {timeout_s} s\n"
                                   f"{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast", *, timeout_s: float = 60.0) -> None:
        """Stop (no-op if stopped); ``fast`` disconnects clients and shuts down cleanly."""
        with self._lock:
            if not self.running():
                return
            out = self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w",
                            "-t", str(int(timeout_s)), "stop", timeout_s=timeout_s + 10)
            if out.returncode != 0 and self.running():
                out = self._run(_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
                if out.returncode != 0 and self.running():
                    raise RuntimeError(f"PostgreSQL on port {self.port} did not stop:\n{out.stderr}")

    def destroy(self) -> None:
        """Stop and remove a throwaway cluster (safe to call twice)."""
        with contextlib.suppress(Exception):
            self.stop("fast", timeout_s=30)
        with contextlib.suppress(Exception):
            self.stop("immediate", timeout_s=30)
        if self.throwaway:
            shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- SQL -----------------------------------------------------------------------------------
    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run([_binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                              "-c", sql], capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"psql on port {self.port} failed for {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def new_database(self, name: str, owner: str = "postgres") -> str:
        """A fresh empty database (from template0); returns its URL."""
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0 OWNER "{owner}"')
        return self.url_for(name)

    def ensure_role_and_database(self, name: str) -> str:
        """Role ``name`` (login) owning database ``name``; idempotent. Returns its URL."""
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'"):
            self.psql(f'CREATE ROLE "{name}" LOGIN')
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.new_database(name, owner=name)
        return self.url_for(name, user=name)

    @classmethod
    def throwaway_cluster(cls) -> PostgresCluster:
        # Not under pytest's tmp_path: that tree is root-only, the postgres user could not enter it.
        root = Path(tempfile.mkdtemp(prefix="callctl-pg-"))
        os.chmod(root, 0o755)
        return cls(root, free_port(), throwaway=True)


def apply_migrations(url: str, directory: Path = MIGRATIONS) -> list[str]:
    """Run callctl's migrate in a private event loop (callable from sync and async tests alike)."""
    from callctl.store.migrate import migrate

    result: list[list[str]] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(migrate(url, directory)))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=work, name="migrate")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# -- pytest plugin -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.throwaway_cluster()
    atexit.register(cluster.destroy)  # even if the session is interrupted before teardown
    for attempt in range(3):
        try:
            cluster.start()
            break
        except RuntimeError:
            # The free port may have been taken between choosing it and binding it.
            if attempt == 2:
                cluster.destroy()
                raise
            cluster.port = free_port()
    try:
        yield cluster
    finally:
        cluster.destroy()


_TEMPLATES: dict[int, str] = {}  # cluster port -> name of its migrated template database


def migrated_template(postgres: PostgresCluster) -> str:
    """A database with every migration applied, made once per cluster; tests copy it (CREATE DATABASE
    .. TEMPLATE is a file copy: about 0.4 s instead of about 1 s to migrate each test's database)."""
    name = _TEMPLATES.get(postgres.port)
    if name is None:
        name = f"callctl_template_{uuid.uuid4().hex[:8]}"
        apply_migrations(postgres.new_database(name))
        _TEMPLATES[postgres.port] = name
    return name


@pytest.fixture
def database_url(postgres: PostgresCluster) -> str:
    """A fresh database for this test, migrations applied (copied from the session's migrated template)."""
    postgres.start()  # an outage test that failed half-way may have left it stopped
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template(postgres)}"')
    return postgres.url_for(name)


# -- command line (make run) -------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.postgres", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start (creating if needed) the cluster in DIR; print the URL")
    start.add_argument("dir", type=Path)
    start.add_argument("port", type=int)
    stop = sub.add_parser("stop", help="stop the cluster in DIR (no-op if stopped)")
    stop.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    root: Path = args.dir.resolve()
    try:
        if args.action == "start":
            cluster = PostgresCluster(root, args.port)
            if cluster.running():
                cluster.port = cluster.running_port() or args.port
            cluster.start()
            print(f"PostgreSQL running in {root} on 127.0.0.1:{cluster.port} (log {cluster.log_file})",
                  file=sys.stderr)
            print(cluster.ensure_role_and_database("callctl"))
        else:
            cluster = PostgresCluster(root, 0)
            cluster.stop()
            print(f"PostgreSQL in {root} stopped", file=sys.stderr)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"tests.support.postgres: {args.action} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
