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
import functools
import signal
from typing import Any

from callctl import __version__
from callctl.agi.gate import gate_handler
from callctl.agi.server import AgiServer
from callctl.ari.client import AriClient
from callctl.ari.events import Event
from callctl.billing.holds import HoldSweeper
from callctl.billing.plans import load_plans
from callctl.billing.service import PrepaidBilling
from callctl.calls.supervisor import Supervisor
from callctl.cdr.journal import CallJournal
from callctl.cdr.writer import CdrWriter
from callctl.conference import steps as conference_steps
from callctl.conference.minutes import settle_abandoned_holds
from callctl.conference.service import ConferenceService, LockoutPolicy
from callctl.config import Settings
from callctl.dialplans import DialplanHolder, LiveCountries
from callctl.errors import AriError
from callctl.flows import switches as flow_switches
from callctl.fraud.alerts import Mailer as FraudMailer
from callctl.fraud.edge import edge_guard
from callctl.fraud.service import FraudService
from callctl.fraud.settings import fraud_policy
from callctl.gating.originate import ORIGINATE_ARG, Dialer
from callctl.gating.service import Decision, decide
from callctl.gating.upkeep import EmergencyUpkeep
from callctl.health import HealthServer, LoopLagMonitor, pid_file, register_daemon_metrics
from callctl.lines.routing import LineLookups, LineService, LineUserLike
from callctl.logging import get_logger
from callctl.mail import Outbox as Mailer  # voicemail's outbox and relay
from callctl.metrics import Metrics
from callctl.recording.calls import LineRecorder
from callctl.recording.conference import ConferenceRecorder
from callctl.recording.service import RecordingService
from callctl.router import Router
from callctl.store import lines as lines_store
from callctl.store.cdrs import PgCdrStore
from callctl.store.pool import lazy_pool
from callctl.store.switches import PgSwitches
from callctl.systemd import notify, watchdog_interval_s
from callctl.tasks import SideTasks
from callctl.voicemail import steps as voicemail_steps
from callctl.voicemail.service import VoicemailService
from callctl.web.server import SpaceServer

log = get_logger("callctl.app")

LINE_OUTBOUND_ARG = "line-outbound"  # extensions.conf [from-users]: Stasis(${CALLCTL_APP},line-outbound)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.dialplans = DialplanHolder(settings.dialplan_dir)
        self.plans = load_plans(settings.plans_file)  # refused at start like the dialplan
        self.router = Router(lambda: self.dialplans.current)
        self.stopping = asyncio.Event()
        self.lag = LoopLagMonitor()
        self._asterisk_id = "unknown"
        self.writer: CdrWriter | None = None
        self.ari: AriClient | None = None
        self.supervisor: Supervisor | None = None
        self.dialer: Dialer | None = None
        self.emergency: EmergencyUpkeep | None = None
        self.recordings: RecordingService | None = None
        self.conferences: ConferenceService | None = None
        self.voicemail: VoicemailService | None = None
        self.fraud: FraudService | None = None
        self._side = SideTasks("daemon_side_task_failed")

    # -- wiring ------------------------------------------------------------------------------------

    def _wire_features(self, stack: contextlib.AsyncExitStack, pool: Any, background: SideTasks) -> None:
        """Billing, business lines, the dialer, recordings and conferences, and the router's handlers."""
        assert self.ari is not None and self.supervisor is not None and self.writer is not None
        s, ari, supervisor = self.settings, self.ari, self.supervisor
        # One deck cache for SIP users' and originated calls; holds name the Asterisk they were taken on.
        billing = PrepaidBilling(pool, self.plans, lambda: self._asterisk_id)
        supervisor.tell_ends_to(HoldSweeper(billing.settle_abandoned, supervisor.owned, supervisor.channel_up))
        self.dialer = Dialer(pool, lambda: self.dialplans.current, ari.originate, self._can_originate,
                             billing=billing)
        self.emergency = EmergencyUpkeep(pool, lambda: self.dialplans.current.countries, self.writer.submit)
        background.spawn(self.emergency.refresh_endpoint_vars(), name="emergency-vars")
        self.recordings = recordings = RecordingService(pool, ari, s.recordings_path,
                                                        objection_key=s.recording_objection_key)
        lines = LineService(LineLookups(functools.partial(lines_store.user_for_did, pool),
                                        functools.partial(lines_store.user_for_endpoint, pool)),
                            billing=billing, gate=functools.partial(self._gate, pool),
                            recorder=LineRecorder(recordings, language_of=self.dialplans.language_of))
        # issue 20: the fraud screen before every outbound leg (lines, dialer, FastAGI gate)
        self.fraud = FraudService(pool, fraud_policy(s), metrics=self.metrics, channel_var=ari.get_var,
                                  mailer=FraudMailer(s.outbox_dir, s.smtp_relay, s.mail_from, s.fraud_alert_email))
        lines.fraud = self.dialer.fraud = self.fraud
        self.conferences = conferences = ConferenceService(pool, ari, lockout=LockoutPolicy(
            s.conference_lockout_failures, s.conference_lockout_number_failures, s.conference_lockout_window_s),
            meter_ops=ari, recorder=ConferenceRecorder(recordings))
        background.spawn(settle_abandoned_holds(pool), name="minutes-sweep")
        recordings.follow_rooms_with(lambda conference_id: conferences.set_recording(conference_id, True))
        background.spawn(recordings.serve_requests(
            lambda r: conferences.set_recording(r.conference_id, r.action == "start")), name="recording-requests")
        conference_steps.bind(conferences)
        stack.callback(conference_steps.bind, None)
        flow_switches.bind(PgSwitches(pool))  # the dialplan's day/night switches, kept in PostgreSQL
        stack.callback(flow_switches.bind, None)
        self.voicemail = VoicemailService(pool, recordings, Mailer(s.outbox_dir, s.smtp_relay, s.mail_from))
        voicemail_steps.bind(self.voicemail)
        stack.callback(voicemail_steps.bind, None)
        self.router.on_resumed(lines.take_resumed)
        self.router.on_arg(ORIGINATE_ARG, self.dialer.run)
        self.router.on_arg(LINE_OUTBOUND_ARG, lines.take_outbound)
        self.router.on_number(lines.take_did)

    async def _gate(self, pool: Any, user: LineUserLike, from_e164: str, dialled: str) -> Decision:
        # Business-line users dial by hand: the emergency gate applies, the dialer rules do not.
        return await decide(pool, self.dialplans.current.countries, user.account_id, from_e164, dialled,
                            dt.datetime.now(dt.UTC), account_country=user.country, automated=False)

    # -- what the outside asks -----------------------------------------------------------------------

    async def _originate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /originate (callctl originate): served once the dialer exists."""
        if self.dialer is None:
            return 503, {"error": "starting: no call can be placed yet"}
        return await self.dialer.request(body)

    def _can_originate(self) -> bool:
        return (self.ari is not None and self.ari.connected.is_set() and self.supervisor is not None
                and self.supervisor.accepting)

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
        if self.emergency is not None:
            self._side.spawn(self.emergency.import_asterisk_decisions())
        if self.recordings is not None:
            await self.recordings.resync()
        if self.conferences is not None:
            self._side.spawn(self.conferences.clear_old_bridges(self.ari))
        notify("STATUS=connected to Asterisk")

    def _on_ari_disconnected(self) -> None:
        self.metrics.inc("callctl_ari_disconnects_total")
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
        if self.dialplans.reload() and self.emergency is not None:
            self._side.spawn(self.emergency.refresh_endpoint_vars())
        notify("READY=1")

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

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
                                                         actions={"/originate": self._originate}))
            stack.enter_context(pid_file(s.pid_file))
            background = SideTasks("daemon_background_failed")
            background.spawn(self.lag.run(), name="loop-lag")
            interval = watchdog_interval_s()
            if interval:
                background.spawn(self._watchdog(interval), name="watchdog")
            self.ari = AriClient(s, self._route_event, self._on_ari_connected, self._on_ari_disconnected)
            journal = CallJournal(s.spool_dir)
            stack.callback(journal.close)
            self.supervisor = Supervisor(self.ari, self.writer, self.router, self.metrics,
                                         lambda: self._asterisk_id, journal)
            self.supervisor.log_number_digits = s.log_number_digits
            register_daemon_metrics(self.metrics, self.ari, self.writer, self.lag, self.supervisor.dispatcher)
            pool = await stack.enter_async_context(lazy_pool(s.database_url))
            self._wire_features(stack, pool, background)
            assert self.conferences is not None and self.recordings is not None and self.dialer is not None
            assert self.voicemail is not None
            await stack.enter_async_context(edge_guard(s, pool, self.metrics))  # SIP brute-force blocking (AMI)
            if s.space_listen:  # the conference Online Space (issue 19, docs/conferences.md)
                await stack.enter_async_context(SpaceServer(s, pool, self.conferences))
            if s.agi_listen:
                agi_host, _, agi_port = s.agi_listen.rpartition(":")
                await stack.enter_async_context(AgiServer(
                    agi_host or "127.0.0.1", int(agi_port),
                    gate_handler(pool, LiveCountries(self.dialplans), submit=self.writer.submit, fraud=self.fraud),
                    allow=tuple(a.strip() for a in s.agi_allow.split(",") if a.strip())))
            await stack.enter_async_context(self.ari)
            self._install_signals()
            notify("READY=1", f"STATUS=callctl {__version__} running")
            log.info("callctl_ready", http=s.http_listen, app=s.ari_app, ari=s.ari_url)
            await self.stopping.wait()

            notify("STOPPING=1")
            log.info("callctl_stopping", active_calls=self.supervisor.active_calls, grace_s=s.shutdown_grace_s)
            await self.supervisor.drain(s.shutdown_grace_s)
            await self.supervisor.close()  # its listeners (the credit-hold sweep) stop
            await self.dialer.close()  # "not placed" records still being written get their moment
            await self.conferences.close()  # rooms destroy their bridges while ARI is still connected
            await self.voicemail.close()  # messages being left are filed and e-mailed
            await self.recordings.close()  # recordings stopped by the rooms are filed over ARI
            await self.ari.close()
            drained = await self.writer.wait_for_drained(10.0)
            background.cancel()
            self._side.cancel()
            log.info("callctl_stopped", cdrs_drained=drained, cdrs_spooled=self.writer.queue_depth)
        return 0


async def run_daemon(settings: Settings) -> int:
    return await Daemon(settings).run()
