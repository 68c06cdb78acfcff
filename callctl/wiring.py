"""Which feature serves which calls: the features built on one PostgreSQL pool, bound to the flow
steps they add, and registered with the router. Called once by the composition root (app.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callctl.ari.client import AriClient
from callctl.billing.holds import HoldSweeper
from callctl.billing.plans import Plans
from callctl.billing.service import PrepaidBilling
from callctl.calls.adoption import orphan_recorder
from callctl.calls.supervisor import Supervisor
from callctl.cdr.journal import CallJournal, JournalMirror, JournalStore
from callctl.cdr.writer import CdrWriter
from callctl.conference import steps as conference_steps
from callctl.conference.affinity import RoomLeases
from callctl.conference.minutes import settle_abandoned_holds
from callctl.conference.offline import OfflineCodes
from callctl.conference.remote import ClusterRooms
from callctl.conference.service import ConferenceService, LockoutPolicy
from callctl.config import Settings
from callctl.dialplans import DialplanHolder
from callctl.errors import StoreError
from callctl.flows import switches as flow_switches
from callctl.fraud.alerts import Mailer as FraudMailer
from callctl.fraud.service import FraudService
from callctl.fraud.settings import fraud_policy
from callctl.gating.originate import ORIGINATE_ARG, Dialer
from callctl.gating.service import Decision, decide
from callctl.gating.upkeep import EmergencyUpkeep
from callctl.lines.routing import LineLookups, LineService, LineUserLike
from callctl.lines.slots import SharedChannelLimits, SlotStore
from callctl.logging import get_logger
from callctl.mail import Outbox
from callctl.metrics import Metrics
from callctl.recording.calls import LineRecorder
from callctl.recording.conference import ConferenceRecorder
from callctl.recording.service import RecordingService
from callctl.router import Router
from callctl.store import journal as journal_store
from callctl.store import lines as lines_store
from callctl.store.lockout import LockoutCache
from callctl.store.switches import PgSwitches
from callctl.tasks import SideTasks
from callctl.voicemail import steps as voicemail_steps
from callctl.voicemail.service import VoicemailService

log = get_logger("callctl.wiring")

JOURNAL_LOAD_TIMEOUT_S = 5.0
LINE_OUTBOUND_ARG = "line-outbound"  # extensions.conf [from-users]: Stasis(${CALLCTL_APP},line-outbound)


@dataclass
class Features:
    """The feature services the daemon keeps a handle on (resync, reload, shutdown)."""

    dialer: Dialer
    emergency: EmergencyUpkeep
    recordings: RecordingService
    conferences: ConferenceService
    voicemail: VoicemailService
    fraud: FraudService
    rooms: ClusterRooms  # issue 18: the rooms wherever they live, for the Online Space

    async def close(self) -> None:
        """In this order, while ARI is still connected: "not placed" dialer records get their moment,
        rooms destroy their bridges, messages being left are filed and e-mailed, the recordings the
        rooms stopped are filed."""
        await self.dialer.close()
        await self.conferences.close()
        await self.voicemail.close()
        await self.recordings.close()


async def share_journal(s: Settings, pool: Any, journal: CallJournal, writer: CdrWriter,
                        background: SideTasks) -> JournalMirror:
    """issue 18: the open-calls journal also in PostgreSQL (docs/scaling.md, "What survives a node"):
    this node's rows read back before the first resynchronisation, then mirrored; dead nodes' rows
    taken over and recorded."""
    mirror = JournalMirror(JournalStore(functools.partial(journal_store.apply, pool),
                                        functools.partial(journal_store.node_calls, pool),
                                        functools.partial(journal_store.drop_recorded, pool),
                                        functools.partial(journal_store.claim_dead_nodes, pool)),
                           s.node, takeover_s=s.node_takeover_s, orphans=orphan_recorder(writer.submit))
    try:
        async with asyncio.timeout(JOURNAL_LOAD_TIMEOUT_S):  # a start is never held up long by the database
            await mirror.load(journal)
    except (StoreError, TimeoutError) as exc:  # the local file is all there is for now
        log.warning("open_calls_not_read_from_database",
                    error=exc.message if isinstance(exc, StoreError) else "timed out")
    journal.share(mirror)
    background.spawn(mirror.run(), name="open-calls-mirror")
    return mirror


def wire_features(s: Settings, plans: Plans, dialplans: DialplanHolder, router: Router, ari: AriClient,
                  supervisor: Supervisor, writer: CdrWriter, metrics: Metrics, *, asterisk_id: Callable[[], str],
                  can_originate: Callable[[], bool], stack: contextlib.AsyncExitStack, pool: Any,
                  background: SideTasks) -> Features:
    """Billing, business lines, the dialer, the fraud screen, recordings, conferences, voicemail and
    switches, and the router's handlers."""
    # One deck cache for SIP users' and originated calls; holds name the Asterisk they were taken on.
    billing = PrepaidBilling(pool, plans, asterisk_id)
    supervisor.tell_ends_to(HoldSweeper(billing.settle_abandoned, supervisor.owned, supervisor.channel_up))
    dialer = Dialer(pool, lambda: dialplans.current, ari.originate, can_originate, billing=billing)
    emergency = EmergencyUpkeep(pool, lambda: dialplans.current.countries, writer.submit)
    background.spawn(emergency.refresh_endpoint_vars(), name="emergency-vars")
    recordings = RecordingService(pool, ari, s.recordings_path, objection_key=s.recording_objection_key,
                                  node=s.node)

    async def gate(user: LineUserLike, from_e164: str, dialled: str) -> Decision:
        # Business-line users dial by hand: the emergency gate applies, the dialer rules do not.
        return await decide(pool, dialplans.current.countries, user.account_id, from_e164, dialled,
                            dt.datetime.now(dt.UTC), account_country=user.country, automated=False)

    # issue 18: a SIP user's channel slots in PostgreSQL, counted over every node sharing it
    slots = SharedChannelLimits(SlotStore(functools.partial(lines_store.take_slot, pool),
                                          functools.partial(lines_store.release_slots, pool),
                                          functools.partial(lines_store.node_slot_channels, pool),
                                          functools.partial(lines_store.heartbeat, pool)),
                                s.node, lease_s=s.node_lease_s, owned=supervisor.owned,
                                channel_up=supervisor.channel_up)
    supervisor.tell_ends_to(slots)
    background.spawn(slots.run_heartbeat(), name="line-slots-heartbeat")
    lines = LineService(LineLookups(functools.partial(lines_store.user_for_did, pool),
                                    functools.partial(lines_store.user_for_endpoint, pool)), slots,
                        billing=billing, gate=gate,
                        recorder=LineRecorder(recordings, language_of=dialplans.language_of))
    # issue 20: the fraud screen before every outbound leg (lines, dialer, FastAGI gate)
    fraud = FraudService(pool, fraud_policy(s), metrics=metrics, channel_var=ari.get_var,
                         mailer=FraudMailer(s.outbox_dir, s.smtp_relay, s.mail_from, s.fraud_alert_email))
    lines.fraud = dialer.fraud = fraud
    # issue 18: rooms held under a lease in PostgreSQL; members admitted elsewhere are handed to the owner
    leases = RoomLeases(pool, s.node, s.conference_lease_s, lambda: conferences.held_rooms())
    conferences = ConferenceService(pool, ari, lockout=LockoutPolicy(
        s.conference_lockout_failures, s.conference_lockout_number_failures, s.conference_lockout_window_s),
        meter_ops=ari, recorder=ConferenceRecorder(recordings), leases=leases, channel_vars=ari)
    background.spawn(leases.renew_forever(), name="conference-leases")
    # issue 18: the Online Space's commands reach a room held by another node (through PostgreSQL)
    rooms = ClusterRooms(pool, s.database_url, conferences, conferences.changes, s.node)
    conferences.room_watch = rooms.room_changed
    background.spawn(rooms.serve(), name="conference-commands")
    background.spawn(settle_abandoned_holds(pool), name="minutes-sweep")
    conferences.offline = OfflineCodes(pool)  # issue 18: callers still get in while PostgreSQL is unreachable
    background.spawn(conferences.offline.run(), name="conference-codes-offline")
    # issue 17: the lockout check before the code prompt from memory, kept by PostgreSQL's notifications
    conferences.failures = failures = LockoutCache(s.database_url, s.conference_lockout_window_s)
    background.spawn(failures.run(), name="conference-lockout-listener")
    recordings.follow_rooms_with(lambda conference_id: conferences.set_recording(conference_id, True))
    conference_steps.bind(conferences)
    stack.callback(conference_steps.bind, None)
    flow_switches.bind(PgSwitches(pool))  # the dialplan's day/night switches, kept in PostgreSQL
    stack.callback(flow_switches.bind, None)
    voicemail = VoicemailService(pool, recordings, Outbox(s.outbox_dir, s.smtp_relay, s.mail_from))
    voicemail_steps.bind(voicemail)
    stack.callback(voicemail_steps.bind, None)
    router.on_resumed(lines.take_resumed)
    router.on_resumed(dialer.resume, arg=ORIGINATE_ARG)  # wt-journal: a bridged dialer call stays its account's
    router.on_arg(ORIGINATE_ARG, dialer.run)
    router.on_arg(LINE_OUTBOUND_ARG, lines.take_outbound)
    router.on_number(conferences.take_hop)  # only channels from a peer node's endpoint (pjsip_nodes.conf)
    router.on_number(lines.take_did)
    return Features(dialer, emergency, recordings, conferences, voicemail, fraud, rooms)
