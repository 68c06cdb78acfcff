"""PostgreSQL connections kept LISTENing: the base of the engine's caches with explicit invalidation (the
gate's account facts, the conference lockout's failures, one channel each) and of the rooms' command
listener (callctl.store.room_commands, three channels).

What is built on a listener relies on it only while it can hear its channels: until it is up (and has read
what it needs, ``loaded``), and from the moment its connection is lost, a cache reads PostgreSQL and the
room commands poll it. A listener whose connection dies silently (no FIN) is noticed by its ping within
``ping_interval_s`` + ``ping_timeout_s``; it reconnects with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any, Self

import asyncpg
import structlog

from callctl.store.db import CONNECT_TIMEOUT_S, close_quietly, describe_url
from callctl.tasks import wait_for_event

log = structlog.get_logger("callctl.store.listen")


class Listener:
    """Subclasses set ``channels``, ``app_name`` and ``event`` (log lines ``<event>_off``/``<event>_on``,
    the first with ``hint``) and implement ``notified`` (a notification's channel and payload); ``forget``
    (drop what was kept from notifications) and ``loaded`` (run on the listener's connection after LISTEN,
    before serving) when they keep something."""

    channels: tuple[str, ...] = ()
    app_name = ""
    event = ""
    hint = ""

    def __init__(self, database_url: str, *, ping_interval_s: float = 1.0, ping_timeout_s: float = 2.0,
                 retry_max_s: float = 5.0) -> None:
        self.database_url = database_url
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.retry_max_s = retry_max_s
        self.generation = 0  # bumped by every change heard and every loss: a read that raced one is not kept
        self._listening = False
        self._lost = asyncio.Event()
        self._heard = asyncio.Event()  # set while listening
        self._deaf = asyncio.Event()  # set while not listening
        self._deaf.set()
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None

    # -- what a listener implements --------------------------------------------------------------
    def notified(self, channel: str, payload: str) -> None:
        """A notification on one of ``channels`` (sync, in the connection's callback: never waits)."""
        raise NotImplementedError

    def forget(self) -> None:
        """Drop what was kept from notifications (some may be missed from now on)."""

    async def loaded(self, conn: Any) -> None:
        """Read the starting state (after LISTEN: a change committed meanwhile is both read and heard)."""

    # -- state -----------------------------------------------------------------------------------
    @property
    def listening(self) -> bool:
        """True while notifications can be heard (a cache serves only then)."""
        return self._listening

    async def wait_for_listening(self, timeout_s: float) -> bool:
        """True once notifications can be heard; False if ``timeout_s`` passed first."""
        return await wait_for_event(self._heard, timeout_s)

    async def wait_for_not_listening(self, timeout_s: float) -> bool:
        """True once the listener has stopped hearing (connection lost); False if ``timeout_s`` passed first."""
        return await wait_for_event(self._deaf, timeout_s)

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.generation += 1
        self.notified(channel, payload)

    def _terminated(self, _conn: Any) -> None:
        self.stop_serving("the listener connection closed")

    def stop_serving(self, why: str) -> None:
        """Serve nothing until the listener has reconnected (and reloaded)."""
        self.generation += 1
        self.forget()
        self._lost.set()
        self._heard.clear()
        self._deaf.set()
        if self._listening:
            self._listening = False
            self._down_since = time.monotonic()
            log.warning(f"{self.event}_off", reason=why, database=describe_url(self.database_url), hint=self.hint)

    def _on(self) -> None:
        self.generation += 1
        self._listening = True
        self._deaf.clear()
        self._heard.set()
        down_s = None if self._down_since is None else round(time.monotonic() - self._down_since, 3)
        log.info(f"{self.event}_on", database=describe_url(self.database_url), down_s=down_s)

    # -- the listener ----------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        delay_s = 0.1
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.database_url, timeout=CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": self.app_name})
                conn.add_termination_listener(self._terminated)
                self.forget()  # whatever changed while we could not hear it
                self._lost.clear()
                for channel in self.channels:
                    await conn.add_listener(channel, self._notified)
                await self.loaded(conn)
                if self._lost.is_set():  # a notification said to read again while the state was read
                    raise RuntimeError("told to start again while loading")
                self._on()
                delay_s = 0.1
                while not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.ping_interval_s):
                            await self._lost.wait()
                    if self._lost.is_set() or conn.is_closed():
                        break
                    async with asyncio.timeout(self.ping_timeout_s):
                        await conn.execute("SELECT 1")
                self.stop_serving("the listener connection closed")
            except asyncio.CancelledError:
                self._listening = False  # its owner stops it: closing the connection is no loss to report
                raise
            except Exception as exc:  # any failure means: not listening, retry later
                self.stop_serving(f"{type(exc).__name__}: {exc}")
            finally:
                if conn is not None:
                    await close_quietly(conn, timeout_s=1.0)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.retry_max_s)

    async def run(self) -> None:
        """The listener, until cancelled (a side task of its owner; or ``async with``)."""
        try:
            await self._listen_loop()
        finally:
            self._listening = False
            self.forget()

    async def __aenter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"{self.event}-listener")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._listening = False  # closing its connection is no loss to report
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ListeningCache(Listener):
    """A cache on one channel: subclasses set ``channel``, ``app_name`` and ``event`` and implement ``heard``
    (a notification's payload), ``forget`` (drop everything) and, when the cache must read a starting state,
    ``loaded``."""

    channel = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.channels = (cls.channel,)  # what the listener LISTENs to

    def notified(self, channel: str, payload: str) -> None:
        self.heard(payload)

    def heard(self, payload: str) -> None:
        raise NotImplementedError

    def forget(self) -> None:
        raise NotImplementedError
