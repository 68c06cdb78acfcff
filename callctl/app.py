"""The composition root: wires settings, the CDR writer, the supervisor, ARI and the HTTP probes,
and runs them until SIGTERM.

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
import functools
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from callctl import __version__
from callctl.agi.gate import gate_handler
from callctl.agi.server import AgiServer
from callctl.ari.client import AriClient
from callctl.billing.plans import load_plans
from callctl.billing.service import PrepaidBilling
from callctl.calls.call import Call
from callctl.calls.supervisor import Supervisor
from callctl.cdr.journal import CallJournal
from callctl.cdr.writer import CdrWriter
from callctl.conference import steps as conference_steps
from callctl.conference.minutes import settle_abandoned_holds
from callctl.conference.service import ConferenceService, LockoutPolicy
from callctl.config import Settings
from callctl.countries import Country
from callctl.errors import AriError, DialplanError, StoreError
from callctl.flows import switches as flow_switches
from callctl.flows.engine import run_flow
from callctl.flows.loader import load_dialplan
from callctl.flows.model import normalise_called
from callctl.fraud.alerts import Mailer as FraudMailer
from callctl.fraud.edge import edge_guard
from callctl.fraud.service import FraudService
from callctl.fraud.settings import fraud_policy
from callctl.gating.asterisk_calls import write_emergency_cdrs
from callctl.gating.originate import Dialer
from callctl.gating.service import Decision, decide
from callctl.health import HealthServer, LoopLagMonitor
from callctl.lines.routing import LineLookups, LineService, endpoint_of
from callctl.logging import get_logger
from callctl.metrics import Metrics
from callctl.recording.calls import LineRecorder
from callctl.recording.conference import ConferenceRecorder
from callctl.recording.service import RecordingService
from callctl.store import gating as gating_store
from callctl.store import lines as lines_store
from callctl.store.cdrs import PgCdrStore
from callctl.store.pool import lazy_pool
from callctl.store.switches import PgSwitches
from callctl.systemd import notify, watchdog_interval_s
from callctl.voicemail import steps as voicemail_steps
from callctl.voicemail.mail import Mailer
from callctl.voicemail.service import VoicemailService
from callctl.web.server import SpaceServer

log = get_logger("callctl.app")

NO_ROUTE_MEDIA = ["sound:ss-noservice"]


class DialplanHolder:
    """The current dialplan; a reload swaps it atomically, calls keep the one they started with."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current = load_dialplan(directory)

    def reload(self) -> bool:
        try:
            plan = load_dialplan(self.directory)
        except DialplanError as exc:
            for problem in exc.problems:
                log.error("dialplan_reload_problem", problem=problem)
            log.error("dialplan_reload_refused", problems=len(exc.problems), kept=self.current.version)
            return False
        old, self.current = self.current, plan
        log.info("dialplan_reloaded", version=plan.version, previous=old.version, summary=plan.summary())
        return True


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.dialplans = DialplanHolder(settings.dialplan_dir)
        self.plans = load_plans(settings.plans_file)  # refused at start like the dialplan
        self.stopping = asyncio.Event()
        self.lag = LoopLagMonitor()
        self._asterisk_id = "unknown"
        self.writer: CdrWriter | None = None
        self.ari: AriClient | None = None
        self.supervisor: Supervisor | None = None
        self.lines: LineService | None = None
        self._pool: Any = None
        self.dialer: Dialer | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.recordings: RecordingService | None = None
        self.conferences: ConferenceService | None = None

    async def run_flow_for(self, call: Call) -> tuple[str, str | None, str | None]:
        plan = self.dialplans.current  # captured once: a reload never changes a running call
        call.cdr_fields["dialplan_version"] = plan.version
        assert self.lines is not None
        if call.resumed is not None:  # a two-party call a previous engine bridged: kept up, not re-routed
            return await self._resume(call), call.cdr_fields.get("flow"), plan.version
        if Dialer.is_originated(call.args):  # a dialer call this engine placed (callctl originate)
            assert self.dialer is not None
            return await self.dialer.run(plan, call)
        if "line-outbound" in call.args:  # a business-line user calling out (extensions.conf [from-users])
            call.cdr_fields["flow"] = "line-outbound"
            return await self.lines.outbound(call, endpoint_of(call.channel.name)), "line-outbound", plan.version
        route = plan.route(call.called)
        if route is None or route.entry != route.number:
            # Not one of the dialplan's own numbers: a business-line DID rings its user.
            user = await self._did_user(call.called)
            if user is not None:
                call.country = user.country
                call.cdr_fields["flow"] = "line-inbound"
                return await self.lines.inbound(call, user), "line-inbound", plan.version
        if route is None:
            log.warning("call_no_route", called=call.called)
            await call.answer()
            await call.play(NO_ROUTE_MEDIA, interruptible=False)
            await call.hang_up("unallocated")
            return "no_route", None, plan.version
        call.language = route.language
        call.country = route.country
        call.cdr_fields["flow"] = route.flow
        result = await run_flow(plan, route, call)
        return result.outcome, result.flow, plan.version

    async def _originate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /originate (callctl originate): served once the dialer exists."""
        if self.dialer is None:
            return 503, {"error": "starting: no call can be placed yet"}
        return await self.dialer.request(body)

    def _can_originate(self) -> bool:
        return (self.ari is not None and self.ari.connected.is_set() and self.supervisor is not None
                and self.supervisor.accepting)

    def _language_of(self, country: str) -> str | None:
        """A country's prompt language in the current dialplan (None if the table has no such country)."""
        found = self.dialplans.current.countries.get(country)
        return found.language if found is not None else None

    def _gate_for(self, pool: Any) -> Any:
        async def gate(user: Any, from_e164: str, dialled: str) -> Decision:
            # Business-line users dial by hand: the emergency gate applies, the dialer rules do not.
            return await decide(pool, self.dialplans.current.countries, user.account_id, from_e164, dialled,
                                dt.datetime.now(dt.UTC), account_country=user.country, automated=False)

        return gate

    async def _resume(self, call: Call) -> str:
        assert self.lines is not None and call.resumed is not None
        endpoint = endpoint_of(call.channel.name)
        try:
            user = await self.lines.user_for_endpoint(endpoint) if endpoint else None
        except StoreError as exc:
            log.error("line_lookup_failed", error=exc.message)
            user = None
        outbound = user is not None
        if user is None:  # not placed by a SIP user: a call to one of the users' numbers
            user = await self._did_user(call.called)
        call.cdr_fields["flow"] = "line-outbound" if outbound else "line-inbound"
        return await self.lines.resume(call, user, outbound=outbound, leg_endpoint=endpoint_of(call.resumed[0].name))

    async def _did_user(self, called: str) -> Any:
        assert self.lines is not None
        number = normalise_called(called)
        try:
            return await self.lines.user_for_did(number)
        except StoreError as exc:
            log.error("line_lookup_failed", error=exc.message)
            return None

    def readiness(self) -> dict[str, Any]:
        ari_up = self.ari is not None and self.ari.connected.is_set()
        draining = self.supervisor is not None and not self.supervisor.accepting
        return {
            "ready": ari_up and not draining,
            "ari": "up" if ari_up else "down",
            "ari_error": self.ari.last_error if self.ari else None,
            "store": "up" if self.writer is not None and self.writer.store_up else "down",
            "cdr_queue": self.writer.queue_depth if self.writer else 0,
            "draining": draining,
            "dialplan_version": self.dialplans.current.version,
            "active_calls": self.supervisor.active_calls if self.supervisor else 0,
            "version": __version__,
        }

    async def _on_ari_connected(self) -> None:
        assert self.ari is not None and self.supervisor is not None
        try:
            info = await self.ari.asterisk_info()
            system = info.get("system") or {}
            self._asterisk_id = str(system.get("entity_id") or info.get("config", {}).get("name") or "asterisk")
        except AriError as exc:
            log.warning("asterisk_info_failed", error=exc.message)
        await self.supervisor.resync()
        self._spawn_side(self._import_asterisk_decisions())
        if self.recordings is not None:
            await self.recordings.resync()
        if self.conferences is not None:
            self._spawn_side(self.conferences.clear_old_bridges(self.ari))
        notify("STATUS=connected to Asterisk")

    def _on_ari_disconnected(self) -> None:
        self.metrics.inc("callctl_ari_disconnects_total")
        notify("STATUS=Asterisk connection lost, reconnecting")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        notify("RELOADING=1")
        if self.dialplans.reload() and self._pool is not None:
            self._spawn_side(self._refresh_emergency_vars())
        notify("READY=1")

    def _spawn_side(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _import_asterisk_decisions(self) -> None:
        """Emergency calls Asterisk decided while this engine was away: into gating_decision, once."""
        if self._pool is None:
            return
        try:
            imported = await gating_store.import_asterisk_decisions(self._pool)
        except StoreError as exc:
            log.warning("asterisk_emergency_import_failed", error=exc.message)
            return
        if imported:
            log.warning("emergency_calls_decided_by_asterisk", calls=len(imported),
                        refused=sum(1 for decision, _ in imported if decision == "deny"),
                        rules=sorted({rule for _, rule in imported}))
        if self.writer is not None:  # their CDRs too, once their channels have ended
            await write_emergency_cdrs(self._pool, self.writer.submit)

    async def _refresh_emergency_vars(self) -> None:
        """Asterisk's copy of every account's emergency status (endpoint set_var), from the current country
        table: written at start and after a reload, so an edited table reaches Asterisk (docs/gating.md)."""
        try:
            changed = await gating_store.refresh_endpoint_vars(self._pool, self.dialplans.current.countries)
        except StoreError as exc:
            log.warning("emergency_vars_refresh_failed", error=exc.message)
            return
        log.info("emergency_vars_refreshed", changed=changed)

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    async def run(self) -> int:
        s = self.settings
        log.info("callctl_starting", version=__version__, settings=s.source, dialplan=self.dialplans.current.summary())
        self._register_metrics()
        async with contextlib.AsyncExitStack() as stack:
            self.writer = await stack.enter_async_context(CdrWriter(
                s.database_url, s.spool_dir, store_factory=PgCdrStore,
                on_submit=lambda r: self.metrics.inc("callctl_cdrs_total", disposition=r.disposition)))
            host, port = s.http_host_port
            await stack.enter_async_context(HealthServer(host, port, self.metrics, self.readiness,
                                                         actions={"/originate": self._originate}))
            stack.enter_context(_pid_file(s.pid_file))
            background: set[asyncio.Task[None]] = {asyncio.create_task(self.lag.run(), name="loop-lag")}
            interval = watchdog_interval_s()
            if interval:
                background.add(asyncio.create_task(self._watchdog(interval), name="watchdog"))
            self.ari = AriClient(s, self._route_event, self._on_ari_connected, self._on_ari_disconnected)
            journal = CallJournal(s.spool_dir)
            stack.callback(journal.close)
            self.supervisor = Supervisor(self.ari, self.writer, self.run_flow_for, self.metrics,
                                         lambda: self._asterisk_id, journal)
            self.supervisor.log_number_digits = s.log_number_digits
            pool = await stack.enter_async_context(lazy_pool(s.database_url))
            self._pool = pool
            # One deck cache for SIP users' and originated calls; holds name the Asterisk they were taken on.
            billing = PrepaidBilling(pool, self.plans, lambda: self._asterisk_id)
            self.supervisor.sweep_holds = billing.settle_abandoned  # holds a dead engine left, at each resync
            self.dialer = Dialer(pool, lambda: self.dialplans.current, self.ari.originate, self._can_originate,
                                 billing=billing)
            background.add(asyncio.create_task(self._refresh_emergency_vars(), name="emergency-vars"))
            self.recordings = RecordingService(pool, self.ari, s.recordings_path,
                                               objection_key=s.recording_objection_key)
            self.lines = LineService(LineLookups(functools.partial(lines_store.user_for_did, pool),
                                                 functools.partial(lines_store.user_for_endpoint, pool)),
                                     billing=billing, gate=self._gate_for(pool),
                                     recorder=LineRecorder(self.recordings, language_of=self._language_of))
            # issue 20: the fraud screen before every outbound leg, and SIP brute-force blocking over AMI
            fraud = FraudService(pool, fraud_policy(s), metrics=self.metrics,
                                 mailer=FraudMailer(s.outbox_dir, s.smtp_relay, s.mail_from, s.fraud_alert_email),
                                 channel_var=self.ari.get_var)
            self.lines.fraud = self.dialer.fraud = fraud
            await stack.enter_async_context(edge_guard(s, pool, self.metrics))
            conferences = ConferenceService(pool, self.ari, lockout=LockoutPolicy(
                s.conference_lockout_failures, s.conference_lockout_number_failures, s.conference_lockout_window_s),
                meter_ops=self.ari,
                recorder=ConferenceRecorder(self.recordings))
            self.conferences = conferences
            background.add(asyncio.create_task(settle_abandoned_holds(pool), name="minutes-sweep"))
            self.recordings.follow_rooms_with(lambda conference_id: conferences.set_recording(conference_id, True))
            background.add(asyncio.create_task(self.recordings.serve_requests(
                lambda r: conferences.set_recording(r.conference_id, r.action == "start")), name="recording-requests"))
            conference_steps.bind(conferences)
            stack.callback(conference_steps.bind, None)
            flow_switches.bind(PgSwitches(pool))
            stack.callback(flow_switches.bind, None)
            voicemail = VoicemailService(pool, self.recordings, Mailer(s.outbox_dir, s.smtp_relay, s.mail_from))
            voicemail_steps.bind(voicemail)
            stack.callback(voicemail_steps.bind, None)
            if s.space_listen:  # the conference Online Space (issue 19, docs/conferences.md)
                await stack.enter_async_context(SpaceServer(s, pool, conferences))
            if s.agi_listen:
                agi_host, _, agi_port = s.agi_listen.rpartition(":")
                await stack.enter_async_context(AgiServer(
                    agi_host or "127.0.0.1", int(agi_port),
                    gate_handler(pool, _LiveCountries(self.dialplans), submit=self.writer.submit, fraud=fraud),
                    allow=tuple(a.strip() for a in s.agi_allow.split(",") if a.strip())))
            await stack.enter_async_context(self.ari)
            self._install_signals()
            notify("READY=1", f"STATUS=callctl {__version__} running")
            log.info("callctl_ready", http=s.http_listen, app=s.ari_app, ari=s.ari_url)
            await self.stopping.wait()

            notify("STOPPING=1")
            log.info("callctl_stopping", active_calls=self.supervisor.active_calls, grace_s=s.shutdown_grace_s)
            await self.supervisor.drain(s.shutdown_grace_s)
            await conferences.close()  # rooms destroy their bridges while ARI is still connected
            await voicemail.close()  # messages being left are filed and e-mailed
            await self.recordings.close()  # recordings stopped by the rooms are filed over ARI
            await self.ari.close()
            drained = await self.writer.wait_for_drained(10.0)
            for task in background | self._side_tasks:
                task.cancel()
            log.info("callctl_stopped", cdrs_drained=drained, cdrs_spooled=self.writer.queue_depth)
        return 0

    def _route_event(self, event: Any) -> None:
        assert self.supervisor is not None
        self.supervisor.dispatcher.route(event)

    def _register_metrics(self) -> None:
        m = self.metrics
        m.counter("callctl_cdrs_total", "CDRs handed to the writer, by disposition (EMERGENCY_REFUSED among them)")
        m.counter("callctl_ari_disconnects_total", "ARI websocket losses (each followed by a reconnect)")
        m.gauge("callctl_ari_connected", "1 while the ARI websocket is up",
                lambda: 1.0 if self.ari is not None and self.ari.connected.is_set() else 0.0)
        m.gauge("callctl_ari_reconnects", "ARI reconnections since start",
                lambda: float(self.ari.reconnects) if self.ari else 0.0)
        m.gauge("callctl_cdr_queue_depth", "CDRs not yet in PostgreSQL (memory + spool)",
                lambda: float(self.writer.queue_depth) if self.writer else 0.0)
        m.gauge("callctl_cdr_store_up", "1 while PostgreSQL accepts CDRs",
                lambda: 1.0 if self.writer is not None and self.writer.store_up else 0.0)
        m.gauge("callctl_event_loop_lag_seconds", "Last measured event-loop wake-up lag", lambda: self.lag.last_s)
        m.gauge("callctl_event_loop_lag_max_seconds", "Largest event-loop lag since start", lambda: self.lag.max_s)
        m.gauge("callctl_ari_events", "ARI events received",
                lambda: float(self.supervisor.dispatcher.events_total) if self.supervisor else 0.0)


class _LiveCountries(Mapping[str, Country]):
    """The country table of the current dialplan (a reload applies to the next FastAGI request)."""

    def __init__(self, holder: DialplanHolder) -> None:
        self._holder = holder

    def __getitem__(self, key: str) -> Country:
        return self._holder.current.countries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._holder.current.countries)

    def __len__(self) -> int:
        return len(self._holder.current.countries)


@contextlib.contextmanager
def _pid_file(path: Path) -> Any:
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


async def run_daemon(settings: Settings) -> int:
    return await Daemon(settings).run()
