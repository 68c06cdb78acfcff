"""Loopback HTTP for probes and scraping: /livez, /readyz (JSON) and /metrics (Prometheus text), plus the
control actions and JSON views the composition root registers (POST /originate: docs/gating.md;
GET /calls: the calls in progress, for ``callctl calls``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from callctl import __version__
from callctl.errors import ConfigError
from callctl.logging import get_logger
from callctl.loopwatch import LoopWatch
from callctl.metrics import Metrics

log = get_logger("callctl.app")

# A control action on the loopback HTTP server: the JSON body in, (HTTP status, JSON answer) out.
Action = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class HealthServer:
    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Callable[[], dict[str, Any]],
                 actions: Mapping[str, Action] | None = None,
                 views: Mapping[str, Callable[[], dict[str, Any]]] | None = None) -> None:
        self._host, self._port = host, port
        self._metrics = metrics
        self._readiness = readiness
        self._actions = dict(actions or {})
        self._views = dict(views or {})
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> HealthServer:
        app = web.Application()
        app.router.add_get("/livez", self._live)
        app.router.add_get("/readyz", self._ready)
        app.router.add_get("/metrics", self._scrape)
        for path in self._views:
            app.router.add_get(path, self._view)
        for path in self._actions:
            app.router.add_post(path, self._act)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(f"http_listen {self._host}:{self._port}: cannot listen: {exc.strerror}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _live(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, _request: web.Request) -> web.Response:
        state = self._readiness()
        return web.Response(text=json.dumps(state) + "\n", content_type="application/json",
                            status=200 if state.get("ready") else 503)

    async def _act(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            status, answer = 400, {"error": "the request body must be a JSON object"}
        else:
            status, answer = await self._actions[request.path](body)
        return web.Response(text=json.dumps(answer) + "\n", content_type="application/json", status=status)

    async def _view(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self._views[request.path]()) + "\n", content_type="application/json")

    async def _scrape(self, _request: web.Request) -> web.Response:
        return web.Response(text=self._metrics.render(), content_type="text/plain", charset="utf-8")


class _AriState(Protocol):
    connected: asyncio.Event
    reconnects: int


class _CdrState(Protocol):
    @property
    def queue_depth(self) -> int: ...
    @property
    def store_up(self) -> bool: ...


class _EventCount(Protocol):
    events_total: int


def register_daemon_metrics(m: Metrics, ari: _AriState, cdrs: _CdrState, lag: LoopWatch,
                            events: _EventCount) -> None:
    """The daemon's own gauges: ARI connection, CDR backlog, event-loop lag, events received."""
    m.counter("callctl_ari_disconnects_total", "ARI websocket losses (each followed by a reconnect)")
    m.counter("callctl_cdrs_total", "CDRs handed to the writer, by disposition (EMERGENCY_REFUSED among them)")
    m.gauge("callctl_ari_connected", "1 while the ARI websocket is up", lambda: 1.0 if ari.connected.is_set() else 0.0)
    m.gauge("callctl_ari_reconnects", "ARI reconnections since start", lambda: float(ari.reconnects))
    m.gauge("callctl_cdr_queue_depth", "CDRs not yet in PostgreSQL (memory + spool)", lambda: float(cdrs.queue_depth))
    m.gauge("callctl_cdr_store_up", "1 while PostgreSQL accepts CDRs", lambda: 1.0 if cdrs.store_up else 0.0)
    m.gauge("callctl_event_loop_lag_seconds", "Last measured event-loop wake-up lag", lambda: lag.last_s)
    m.gauge("callctl_event_loop_lag_max_seconds", "Largest event-loop lag since start", lambda: lag.max_s)
    m.histogram("callctl_event_loop_lag_distribution_seconds", "Event-loop wake-up lag, sampled every "
                f"{lag.interval_s * 1000:g} ms", lambda: (lag.lag.bounds, lag.lag.counts, lag.lag.total))
    m.histogram("callctl_gc_pause_seconds", "Garbage-collector pauses of the event loop's thread",
                lambda: (lag.gc_pauses.bounds, lag.gc_pauses.counts, lag.gc_pauses.total))
    m.gauge("callctl_event_loop_held_total", "Times one callback held the event loop past the warning threshold",
            lambda: float(lag.held_total))
    m.gauge("callctl_ari_events", "ARI events received", lambda: float(events.events_total))


@contextlib.contextmanager
def pid_file(path: Path) -> Iterator[None]:
    """The daemon's pid in ``path`` while it runs (a warning, not a failure, if it cannot be written)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("pid_file_unwritable", path=str(path), error=exc.strerror)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def readiness(ari: Any, supervisor: Any, writer: Any, dialplan_version: str) -> dict[str, Any]:
    """GET /readyz: ready (200) only when ARI is connected and the engine is not draining."""
    ari_up = ari is not None and ari.connected.is_set()
    draining = supervisor is not None and not supervisor.accepting
    return {
        "ready": ari_up and not draining,
        "ari": "up" if ari_up else "down",
        "ari_error": ari.last_error if ari else None,
        "store": "up" if writer is not None and writer.store_up else "down",
        "cdr_queue": writer.queue_depth if writer else 0,
        "draining": draining,
        "dialplan_version": dialplan_version,
        "active_calls": supervisor.active_calls if supervisor else 0,
        "version": __version__,
    }
