"""Connecting to PostgreSQL: the one place asyncpg/socket errors become StoreUnavailable with a message
that names the server (never the password), the reason and what to do."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from callctl.errors import StoreError, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0

# SQLSTATE classes that mean "this row is wrong" (data exception, integrity constraint violation);
# every other server error is about the store itself (missing table, shutdown, permissions).
ROW_ERROR_CLASSES = ("22", "23")


def describe_url(url: str) -> str:
    """The URL as shown in messages and logs: user, host, port and database, never the password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or _query_host(parts.query) or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "<unparseable database URL>"
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}:{port}" if not host.startswith("/") else f"{user}[{host}]:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def host_port(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or _query_host(parts.query) or "localhost"
        return f"{host}:{parts.port or 5432}"
    except ValueError:
        return "<unparseable database URL>"


def _query_host(query: str) -> str | None:
    hosts = parse_qs(query).get("host")
    return hosts[0] if hosts else None


def is_unavailable(exc: BaseException) -> bool:
    """True for errors that say "the server is not usable now" rather than "this statement is wrong"."""
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return not str(getattr(exc, "sqlstate", "") or "").startswith(ROW_ERROR_CLASSES)
    return False


def translate(exc: BaseException, url: str | None, doing: str = "") -> StoreError:
    """The callctl error for an asyncpg/socket error raised while talking to ``url`` (None: unknown)."""
    where = f"PostgreSQL at {host_port(url)}" if url else "PostgreSQL"
    url = url or ""
    what = f" while {doing}" if doing else ""
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return StoreUnavailable(f"{where} refused the password for user "
                                f"'{urlsplit(url).username or '?'}'{what}: fix the password in database_url "
                                "(CALLCTL_DATABASE_URL)")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return StoreUnavailable(f"{where} refused the connection{what}: {exc}: check the user in database_url "
                                "and pg_hba.conf")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"{where}: {exc}{what}: create the database (createdb) or fix database_url")
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return StoreUnavailable(f"{where}: {exc}{what}: run `callctl db migrate`")
    if isinstance(exc, socket.gaierror):
        return StoreUnavailable(f"cannot resolve the PostgreSQL host in {describe_url(url)}{what}: "
                                f"{exc.strerror or exc}: fix database_url")
    if isinstance(exc, ConnectionRefusedError):
        return StoreUnavailable(f"cannot reach {where}{what}: connection refused: is PostgreSQL running "
                                "and listening there? (database_url / CALLCTL_DATABASE_URL)")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return StoreUnavailable(f"cannot reach {where}{what}: timed out: check the host, the port and firewalls")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return StoreUnavailable(f"cannot reach {where}{what}: {reason}: is PostgreSQL running there?")
    if isinstance(exc, asyncpg.PostgresError) and not is_unavailable(exc):
        return StoreError(f"{where} rejected a statement{what}: {exc} (SQLSTATE {exc.sqlstate})")
    reason = str(exc) or type(exc).__name__
    return StoreUnavailable(f"{where} is unavailable{what}: {reason}")


async def connect(url: str, *, timeout_s: float = CONNECT_TIMEOUT_S, command_timeout_s: float = 30.0) -> Any:
    """One connection; every failure is a StoreUnavailable naming host:port and what to do."""
    try:
        return await asyncpg.connect(url, timeout=timeout_s, command_timeout=command_timeout_s)
    except Exception as exc:  # asyncpg raises many unrelated types; translate them all here
        raise translate(exc, url, "connecting") from None


async def connect_pool(url: str, *, min_size: int = 1, max_size: int = 4,
                       timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A pool with at least one live connection (so a wrong URL fails here, clearly)."""
    try:
        return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=timeout_s,
                                         command_timeout=30)
    except Exception as exc:
        raise translate(exc, url, "connecting") from None


async def close_quietly(conn_or_pool: Any, *, timeout_s: float = 2.0) -> None:
    """Graceful close with a hard fallback: a dead server must never hang shutdown."""
    if conn_or_pool is None:
        return
    try:
        await asyncio.wait_for(conn_or_pool.close(), timeout_s)
    except Exception:
        conn_or_pool.terminate()


def translated(area: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorator for a store function: asyncpg and socket errors leave it as StoreUnavailable or
    StoreError (naming ``area`` and the function), never as themselves."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await fn(*args, **kwargs)
            except StoreError:
                raise
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise translate(exc, None, f"{area}: {fn.__name__}") from None

        return wrapper

    return decorate


@contextlib.asynccontextmanager
async def connection(db: Any) -> AsyncIterator[Any]:
    """A connection from a pool (or the connection itself) for work that needs a transaction."""
    if hasattr(db, "acquire"):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def run_with_pool(database_url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """For one-shot commands: open a pool, run ``work(pool)`` to completion, close the pool."""

    async def run() -> T:
        pool = await connect_pool(database_url)
        try:
            return await work(pool)
        finally:
            await close_quietly(pool)

    return asyncio.run(run())
