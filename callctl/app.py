"""The composition root: wires settings, the CDR writer, the supervisor, the router and its handlers,
the features, ARI and the HTTP probes, and runs them until SIGTERM. It decides nothing about calls.

Start order: dialplan (refuse to start if invalid) -> CDR writer (spool replay; starts even with
PostgreSQL down) -> HTTP probes -> ARI connection (reconnects forever) -> READY.
Shutdown order (SIGTERM/SIGINT), the reverse: not ready -> stop taking calls (new ones go back
to the dialplan fallback) -> calls finish within the grace, the rest are cut with their CDRs
written -> ARI closed (Asterisk unregisters the app) -> CDRs drained to PostgreSQL or left in the
spool for the next start -> exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from typing import Any

from callctl import __version__
from callctl.agi.gate import gate_handler
from callctl.agi.server import AgiServer
from callctl.ari.client import AriClient
from callctl.ari.events import Event
from callctl.billing.plans import load_plans
from callctl.calls.supervisor import Supervisor
from callctl.calls.trace import in_progress
from callctl.cdr.journal import CallJournal
from callctl.cdr.writer import CdrWriter
from callctl.config import Settings
from callctl.dialplans import DialplanHolder, LiveCountries
from callctl.errors import AriError
from callctl.fraud.edge import edge_guard
from callctl.health import HealthServer, pid_file, readiness, register_daemon_metrics
from callctl.logging import get_logger
from callctl.loopwatch import LoopWatch, freeze_startup_objects
from callctl.metrics import Metrics
from callctl.numbers import mask
from callctl.preanswer import PreAnswer
from callctl.router import Router
from callctl.store.cdrs import PgCdrStore
from callctl.store.facts import AccountFactsCache
from callctl.store.pool import lazy_pool
from callctl.systemd import notify, watchdog_interval_s, watchdog_pings
from callctl.tasks import SideTasks
from callctl.web.server import SpaceServer
from callctl.wiring import Features, share_journal, wire_features

log = get_logger("callctl.app")

PREANSWER_WITHDRAW_S = 2.0  # at shutdown: Asterisk stops answering calls itself before the calls drain


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.dialplans = DialplanHolder(settings.dialplan_dir, settings.pjsip_conf)
        self.plans = load_plans(settings.plans_file)  # refused at start like the dialplan
        self.router = Router(lambda: self.dialplans.current)
        self.stopping = asyncio.Event()
        self.lag = LoopWatch()  # lag histogram, the callback that held the loop, GC pauses
        self._asterisk_id = "unknown"
        self.writer: CdrWriter | None = None
        self.ari: AriClient | None = None
        self.supervisor: Supervisor | None = None
        self.features: Features | None = None
        self.preanswer: PreAnswer | None = None
        self._side = SideTasks("daemon_side_task_failed")

    # -- what the outside asks -----------------------------------------------------------------------

    async def _originate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /originate (callctl originate): served once the dialer exists."""
        if self.features is None:
            return 503, {"error": "starting: no call can be placed yet"}
        return await self.features.dialer.request(body)

    def _calls_in_progress(self) -> dict[str, Any]:
        """GET /calls (callctl calls): callers masked as in the logs."""
        calls = self.supervisor.owned().values() if self.supervisor else ()
        digits = self.settings.log_number_digits
        return {"calls": in_progress(calls, dt.datetime.now(dt.UTC), mask=lambda n: mask(n, digits)),
                "dialplan_version": self.dialplans.current.version}

    def _can_originate(self) -> bool:
        return (self.ari is not None and self.ari.connected.is_set() and self.supervisor is not None
                and self.supervisor.accepting)

    def readiness(self) -> dict[str, Any]:
        return readiness(self.ari, self.supervisor, self.writer, self.dialplans.current.version)

    # -- events of the process -------------------------------------------------------------------

    async def _on_ari_connected(self) -> None:
        assert self.ari is not None and self.supervisor is not None
        try:
            info = await self.ari.asterisk_info()
            system = info.get("system") or {}
            self._asterisk_id = str(system.get("entity_id") or info.get("config", {}).get("name") or "asterisk")
        except AriError as exc:
            log.warning("asterisk_info_failed", error=exc.message)
        await self.supervisor.resync()
        if self.preanswer is not None:  # after the resync: a new call is taken as soon as Asterisk answers it
            self._side.spawn(self.preanswer.publish())
        if self.features is not None:
            self._side.spawn(self.features.emergency.import_asterisk_decisions())
            await self.features.recordings.resync()
            self._side.spawn(self.features.conferences.clear_old_bridges(self.ari))
        notify("STATUS=connected to Asterisk")

    def _on_ari_disconnected(self) -> None:
        self.metrics.inc("callctl_ari_disconnects_total")
        if self.supervisor is not None:
            self.supervisor.connection_lost(self.settings.ari_lost_calls_after_s)
        notify("STATUS=Asterisk connection lost, reconnecting")

    def _route_event(self, event: Event) -> None:
        assert self.supervisor is not None
        self.supervisor.dispatcher.route(event)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        notify("RELOADING=1")
        if self.dialplans.reload():
            if self.features is not None:
                self._side.spawn(self.features.emergency.refresh_endpoint_vars())
            if self.preanswer is not None:
                self._side.spawn(self.preanswer.update())
        notify("READY=1")

    # -- the run -------------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        log.info("callctl_starting", version=__version__, settings=s.source, dialplan=self.dialplans.current.summary())
        async with contextlib.AsyncExitStack() as stack:
            self.writer = await stack.enter_async_context(CdrWriter(
                s.database_url, s.spool_dir, store_factory=PgCdrStore,
                on_submit=lambda r: self.metrics.inc("callctl_cdrs_total", disposition=r.disposition)))
            host, port = s.http_host_port
            await stack.enter_async_context(HealthServer(host, port, self.metrics, self.readiness,
                                                         actions={"/originate": self._originate},
                                                         views={"/calls": self._calls_in_progress}))
            stack.enter_context(pid_file(s.pid_file))
            background = SideTasks("daemon_background_failed")
            await stack.enter_async_context(self.lag)
            interval = watchdog_interval_s()
            if interval:
                background.spawn(watchdog_pings(interval), name="watchdog")
            self.ari = AriClient(s, self._route_event, self._on_ari_connected, self._on_ari_disconnected)
            if s.preanswer == "on":  # wt-preanswer: its AMI login proves to a cluster node that this engine lives
                self.preanswer = PreAnswer(_AriGlobals(self.ari), lambda: self.dialplans.current,
                                           ami_user=s.ami_user if s.ami_address else "")
            journal = CallJournal(s.spool_dir)
            stack.callback(journal.close)
            self.writer.on_spooled = journal.follow_spool()  # a call is closed there once its CDR is on disk
            self.supervisor = Supervisor(self.ari, self.writer, self.router, self.metrics,
                                         lambda: self._asterisk_id, journal)
            self.supervisor.log_number_digits = s.log_number_digits
            register_daemon_metrics(self.metrics, self.ari, self.writer, self.lag, self.supervisor.dispatcher)
            pool = await stack.enter_async_context(lazy_pool(s.database_url))
            mirror = await share_journal(s, pool, journal, self.writer, background)  # issue 18
            self.features = features = wire_features(
                s, self.plans, self.dialplans, self.router, self.ari, self.supervisor, self.writer, self.metrics,
                asterisk_id=lambda: self._asterisk_id, can_originate=self._can_originate, stack=stack, pool=pool,
                background=background)
            await stack.enter_async_context(edge_guard(s, pool, self.metrics))  # SIP brute-force blocking (AMI)
            if s.space_listen:  # the conference Online Space (issue 19, docs/conferences.md)
                await stack.enter_async_context(SpaceServer(s, pool, features.rooms))
            if s.agi_listen:
                agi_host, _, agi_port = s.agi_listen.rpartition(":")
                facts = await stack.enter_async_context(AccountFactsCache(s.database_url))  # issue 17
                await stack.enter_async_context(AgiServer(
                    agi_host or "127.0.0.1", int(agi_port),
                    gate_handler(pool, LiveCountries(self.dialplans), submit=self.writer.submit, fraud=features.fraud,
                                 facts=facts),
                    allow=tuple(a.strip() for a in s.agi_allow.split(",") if a.strip())))
            await stack.enter_async_context(self.ari)
            self._install_signals()
            notify("READY=1", f"STATUS=callctl {__version__} running")
            # What start-up built stays for the process's life: out of the collector's walks.
            frozen = freeze_startup_objects()
            log.info("callctl_ready", http=s.http_listen, app=s.ari_app, ari=s.ari_url,
                     loop=type(asyncio.get_running_loop()).__module__.split(".")[0], gc_frozen=frozen)
            await self.stopping.wait()

            notify("STOPPING=1")
            log.info("callctl_stopping", active_calls=self.supervisor.active_calls, grace_s=s.shutdown_grace_s)
            if self.preanswer is not None:  # first: new calls meet the fallback (503 on a cluster node) unanswered
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PREANSWER_WITHDRAW_S):
                        await self.preanswer.withdraw()
            await self.supervisor.drain(s.shutdown_grace_s)
            await self.supervisor.close()  # its listeners (the credit-hold sweep) stop
            await mirror.close()  # the calls' last journal entries to PostgreSQL
            await features.close()  # while ARI is still connected: rooms, messages, recordings filed
            await self.ari.close()
            drained = await self.writer.wait_for_drained(10.0)
            background.cancel()
            self._side.cancel()
            log.info("callctl_stopped", cdrs_drained=drained, cdrs_spooled=self.writer.queue_depth)
        return 0


class _AriGlobals:
    """ARI ``POST /asterisk/variable`` over the client's request path (wt-preanswer; callctl/ari is another
    branch's: this belongs in AriClient as ``set_global``)."""

    def __init__(self, ari: AriClient) -> None:
        self._ari = ari

    async def set_global(self, name: str, value: str) -> None:
        await self._ari._request("POST", "asterisk/variable", params={"variable": name, "value": value})


async def run_daemon(settings: Settings) -> int:
    return await Daemon(settings).run()


def run_daemon_forever(settings: Settings) -> int:
    """``callctl run``: the daemon on uvloop (``event_loop: uvloop``, the default) or asyncio's own loop."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.run(run_daemon(settings))
    return asyncio.run(run_daemon(settings))
