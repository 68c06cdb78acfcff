"""Owns every call task: starts one per channel entering Stasis, adopts channels found at resync,
hands calls back to the dialplan while draining, and writes one CDR per leg when a call ends.

Call tasks live in the supervisor's own dict, not in the daemon's TaskGroup: one failing call can
never cancel another call or a core service.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from callctl.ari.dispatch import Dispatcher, Mailbox
from callctl.ari.events import ChannelDestroyed, ChannelInfo, StasisEnd, StasisStart
from callctl.calls.call import CALL_BRIDGE_PREFIX, Call, ChannelOps, OutboundLeg
from callctl.cdr.journal import CallJournal
from callctl.cdr.record import RATING_FIELDS, CdrRecord, billed_seconds, leg_id_for
from callctl.errors import AriError, AriUnavailable, CallEnded, ChannelGone, StoreError
from callctl.ids import CallId, ChannelId
from callctl.logging import get_logger
from callctl.metrics import Metrics
from callctl.numbers import mask, to_e164

log = get_logger("callctl.calls")

FALLBACK_CONTEXT = "callctl-fallback"
END_WAIT_S = 5.0
CDR_TAGS = ("account_id", "user_id", "conference_id", "person", "role")
# A flow that charged its call's own channel (an originated call) leaves in ``cdr_fields[SETTLE_FIELD]``
# an async callable: the CDR's billed seconds -> the CDR's rating columns (RATING_FIELDS). The
# supervisor calls it once the channel's end is known, so the debit and the CDR use the same seconds.
SETTLE_FIELD = "settle"

# The sweep of credit holds a dead engine left (callctl.billing.service.PrepaidBilling.settle_abandoned):
# (channels of the calls owned now, billed seconds of calls an engine saw end, "is this channel still up
# in Asterisk?") -> how many holds were kept because their call may still be up.
HoldSweep = Callable[[set[str], dict[str, int], Callable[[str], Awaitable[bool]]], Awaitable[int]]
SWEEP_AGAIN_S = 60.0  # while holds are kept, they are looked at again this often (or when a call ends)
SWEEP_GAP_S = 5.0  # but never more often than this: calls ending at a high rate do not poll PostgreSQL


class SupervisorOps(ChannelOps, Protocol):
    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str = "s",
                                   priority: int = 1) -> None: ...
    async def application_channel_ids(self) -> set[str]: ...
    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...
    async def bridges(self) -> dict[str, list[str]]: ...


class CdrSink(Protocol):
    def submit(self, record: CdrRecord) -> None: ...


class FlowRunner(Protocol):
    """Runs the call's script; returns (outcome, flow name, dialplan version)."""

    async def __call__(self, call: Call) -> tuple[str, str | None, str | None]: ...


class Supervisor:
    def __init__(self, ops: SupervisorOps, cdrs: CdrSink, run_flow: FlowRunner, metrics: Metrics,
                 asterisk_id: Callable[[], str], journal: CallJournal | None = None) -> None:
        self._ops = ops
        self._journal = journal
        self._cdrs = cdrs
        self._run_flow = run_flow
        self._metrics = metrics
        self._asterisk_id = asterisk_id
        self.dispatcher = Dispatcher(self.on_stasis_start)
        self._calls: dict[ChannelId, tuple[Call, asyncio.Task[None]]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.log_number_digits = 4
        self.sweep_holds: HoldSweep | None = None  # set by the composition root when billing is wired
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweep_now = asyncio.Event()
        self._seen_s: dict[str, int] = {}  # channel -> billed seconds of calls recovered or adopted here
        metrics.counter("callctl_calls_total", "Calls finished, by outcome")
        metrics.gauge("callctl_active_calls", "Calls in progress", lambda: len(self._calls))

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    # -- intake --------------------------------------------------------------------------------

    def on_stasis_start(self, event: StasisStart) -> None:
        """Called synchronously by the dispatcher for a channel no call owns yet."""
        if "callctl-leg" in event.args:  # legs we originate are owned by the call that made them
            return
        if not self.accepting:
            self._spawn_side(self._hand_back(event.channel.id))
            return
        self._start_call(event.channel, adopted=False, args=event.args)

    def _start_call(self, channel: ChannelInfo, *, adopted: bool, args: tuple[str, ...] = (),
                    resumed: tuple[ChannelInfo, str] | None = None) -> None:
        mailbox: Mailbox = asyncio.Queue()
        leg = leg_id_for(self._asterisk_id(), channel.id, channel.created_raw)
        opened = self._journal.pending.get(str(leg), {}) if self._journal is not None else {}
        call = Call(self._ops, channel, mailbox, register_leg=self._leg_registrar(mailbox), args=args,
                    on_answer=self._journal_answer(str(leg)),
                    answered_at=dt.datetime.fromisoformat(opened["answered_at"]) if opened.get("answered_at") else None)
        call.call_id = CallId(str(leg))  # an inbound call's id is its first leg's id
        call.resumed = resumed
        if self._journal is not None:
            self._journal.opened(str(leg), call=str(leg), channel=channel.id, started_at=channel.created_at.isoformat(),
                                 caller=channel.caller_number, called=channel.exten, args=list(args))
        self.dispatcher.register(channel.id, mailbox)
        task = asyncio.create_task(self._run_call(call, adopted), name=f"call-{channel.id}")
        self._calls[channel.id] = (call, task)

    def _journal_answer(self, leg: str) -> Callable[[dt.datetime], None] | None:
        journal = self._journal
        if journal is None:
            return None
        return lambda at: journal.answered(leg, at)

    def _leg_registrar(self, mailbox: Mailbox) -> Callable[[ChannelId, bool], None]:
        """Route a dialled leg's events to the mailbox of the call that dialled it."""

        def register(channel_id: ChannelId, on: bool) -> None:
            if on:
                self.dispatcher.register(channel_id, mailbox)
            else:
                self.dispatcher.unregister(channel_id)

        return register

    async def _hand_back(self, channel_id: ChannelId) -> None:
        with contextlib.suppress(AriError):
            await self._ops.continue_in_dialplan(channel_id, FALLBACK_CONTEXT)
            log.info("call_handed_back", channel=channel_id, reason="draining")

    def _spawn_side(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- one call ------------------------------------------------------------------------------

    async def _run_call(self, call: Call, adopted: bool) -> None:
        structlog.contextvars.bind_contextvars(call_id=call.call_id)
        started = time.monotonic()
        log.info("call_started", caller=mask(call.caller, self.log_number_digits), called=call.called,
                 channel=call.channel.id,
                 adopted=adopted)
        outcome, flow, version = "error", None, None
        try:
            outcome, flow, version = await self._run_flow(call)
        except CallEnded:
            outcome = "caller_hung_up"
        except ChannelGone:
            outcome = "caller_hung_up"
        except asyncio.CancelledError:
            # Only the supervisor cancels call tasks (drain): finish the call and write its CDR.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            outcome = "cut_at_shutdown"
            call.lifecycle.hangup_requested("shutdown")
        except AriUnavailable as exc:
            outcome = "ari_lost"
            log.warning("call_ari_lost", error=exc.message)
        except Exception as exc:  # a bug in one call must never reach another
            outcome = "error"
            log.exception("call_failed", error=str(exc))
        # A call that ended by hang-up still says which flow and dialplan version it ran.
        flow = flow or call.cdr_fields.get("flow")
        version = version or call.cdr_fields.get("dialplan_version")
        try:
            await self._finish(call, outcome, flow, version, time.monotonic() - started)
        finally:
            self._calls.pop(call.channel.id, None)
            self.dispatcher.unregister(call.channel.id)
        ended_at = call.lifecycle.ended_at
        if adopted and ended_at is not None:
            # A call a dead engine started may hold credit this engine knows nothing of: settle it now,
            # from Asterisk's events of the channel, else from what this engine saw of the call.
            self._request_sweep({call.channel.id: billed_seconds(call.lifecycle.answered_at, ended_at)})
        elif self._sweep_task is not None and not self._sweep_task.done():
            self._request_sweep({})  # holds are kept: a call that ends may be one of theirs

    async def _finish(self, call: Call, outcome: str, flow: str | None, version: str | None,
                      elapsed_s: float) -> None:
        with contextlib.suppress(AriError):
            await call.hang_up("normal")
        call.drain_mailbox()
        if not call.ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(END_WAIT_S):
                    while not call.ended.is_set():
                        call.drain_mailbox()
                        if call.ended.is_set():
                            break
                        await call.wait_for_mailbox()
        lc = call.lifecycle
        if lc.ended_at is None:
            lc.ended(dt.datetime.now(dt.UTC), None, "end not reported by Asterisk")
        assert lc.ended_at is not None
        settle = call.cdr_fields.pop(SETTLE_FIELD, None)
        if settle is not None:
            try:
                call.cdr_fields.update(await settle(billed_seconds(lc.answered_at, lc.ended_at)))
            except StoreError as exc:  # the hold stays; the next sweep settles it from Asterisk's events
                log.warning("call_not_settled", error=exc.message)
        first_leg = uuid.UUID(call.call_id)
        record = CdrRecord(
            leg_id=first_leg, call_id=first_leg, direction=str(call.cdr_fields.get("direction", "inbound")),
            from_number=to_e164(call.caller, call.country), to_number=to_e164(call.called, call.country),
            started_at=lc.started_at, answered_at=lc.answered_at, ended_at=lc.ended_at,
            disposition=str(call.cdr_fields.get("disposition", lc.disposition)), hangup_cause=lc.hangup_cause,
            hangup_reason=lc.hangup_reason, channel_id=call.channel.id, flow=flow, dialplan_version=version,
            extra={"outcome": outcome, "ended_by": lc.ended_by,
                   **{k[6:]: v for k, v in call.cdr_fields.items() if k.startswith("extra_")}},
            **{k: v for k, v in call.cdr_fields.items() if k in CDR_TAGS or k in RATING_FIELDS},
        )
        self._cdrs.submit(record)
        for leg in call.legs:
            self._cdrs.submit(self._leg_record(call, record, leg))
        if self._journal is not None:
            self._journal.closed(call.call_id)
        self._metrics.inc("callctl_calls_total", outcome=outcome)
        log.info("call_finished", outcome=outcome, disposition=record.disposition, billed_s=record.billed_s,
                 duration_ms=int((lc.ended_at - lc.started_at).total_seconds() * 1000),
                 hangup_cause=lc.hangup_cause, ended_by=lc.ended_by, flow=flow, dialplan_version=version,
                 handled_ms=int(elapsed_s * 1000))
        structlog.contextvars.unbind_contextvars("call_id")

    @staticmethod
    def _leg_record(call: Call, first: CdrRecord, leg: OutboundLeg) -> CdrRecord:
        """The CDR of a leg the call dialled, linked to the call by ``call_id``."""
        lc = leg.lifecycle
        if lc.ended_at is None:
            lc.ended(dt.datetime.now(dt.UTC), None, "end not reported by Asterisk")
        assert lc.ended_at is not None
        dest = leg.target.split("/", 1)[-1].split("@", 1)[0]
        return CdrRecord(
            leg_id=uuid.UUID(leg.channel_id), call_id=first.call_id, direction="outbound",
            from_number=to_e164(leg.caller_id or first.to_number, call.country), to_number=to_e164(dest, call.country),
            started_at=lc.started_at, answered_at=lc.answered_at, ended_at=lc.ended_at,
            disposition=lc.disposition, hangup_cause=lc.hangup_cause, hangup_reason=lc.hangup_reason,
            channel_id=leg.channel_id, flow=first.flow, dialplan_version=first.dialplan_version,
            account_id=first.account_id, user_id=first.user_id,
            extra={"target": leg.target, "ended_by": lc.ended_by},
            **{k: v for k, v in leg.cdr_fields.items() if k in RATING_FIELDS},
        )

    # -- resynchronisation ---------------------------------------------------------------------

    async def resync(self) -> None:
        """After every (re)connect: adopt channels in our app we do not own, close calls whose
        channel vanished while the websocket was down (their events were dropped by Asterisk)."""
        in_app = await self._ops.application_channel_ids()
        for channel_id, (call, _task) in list(self._calls.items()):
            if channel_id in in_app:
                continue
            try:
                await self._ops.get_channel(channel_id)
                call._mailbox.put_nowait(StasisEnd(dt.datetime.now(dt.UTC), channel_id))
            except ChannelGone:
                call._mailbox.put_nowait(ChannelDestroyed(dt.datetime.now(dt.UTC), channel_id, None,
                                                          "hung up while the ARI connection was down"))
        adopted = 0
        # Two-party calls a previous engine bridged ("call-<leg>": the caller and the leg it dialled):
        # the caller's call resumes them (Call.resume_bridged), the leg is not a call of its own.
        unowned = in_app - set(self._calls)
        pairs = await self._bridged_pairs(unowned) if unowned else {}
        legs = {leg for leg, _bridge in pairs.values()}
        for new_id in sorted(unowned - legs):
            try:
                info = ChannelInfo.from_json(await self._ops.get_channel(new_id))
            except ChannelGone:
                continue
            if not self.accepting:
                self._spawn_side(self._hand_back(info.id))
                continue
            resumed = None
            if new_id in pairs:
                leg_id, bridge_id = pairs[new_id]
                try:
                    resumed = (ChannelInfo.from_json(await self._ops.get_channel(leg_id)), bridge_id)
                except ChannelGone:
                    pass
            self._start_call(info, adopted=True, resumed=resumed)
            adopted += 1
        seen: dict[str, int] = {}
        recovered = self._recover_lost(in_app, seen)
        log.info("ari_resynced", in_app=len(in_app), adopted=adopted, recovered=recovered, active=len(self._calls))
        self._request_sweep(seen)  # now that the calls still up are known

    async def _bridged_pairs(self, adoptable: set[str]) -> dict[str, tuple[str, str]]:
        """caller channel -> (leg channel, bridge id) of the two-party bridges among ``adoptable``."""
        try:
            bridges = await self._ops.bridges()
        except AriError as exc:
            log.warning("ari_bridges_unavailable", error=exc.message)
            return {}
        pairs: dict[str, tuple[str, str]] = {}
        for bridge_id, members in bridges.items():
            leg = bridge_id.removeprefix(CALL_BRIDGE_PREFIX)
            if leg == bridge_id or len(members) != 2 or leg not in members or not set(members) <= adoptable:
                continue
            (caller,) = [m for m in members if m != leg]
            pairs[caller] = (leg, bridge_id)
        return pairs

    # -- credit holds a dead engine left ---------------------------------------------------------

    def _request_sweep(self, seen: dict[str, int]) -> None:
        if self.sweep_holds is None:
            return
        self._seen_s.update(seen)
        self._sweep_now.set()
        if self._sweep_task is None or self._sweep_task.done():
            self._sweep_task = asyncio.create_task(self._sweep_holds(self.sweep_holds), name="credit-holds-sweep")

    async def _sweep_holds(self, sweep: HoldSweep) -> None:
        """Settle the holds of calls that ended without their engine; while some are kept (their call may
        still be up), look again every SWEEP_AGAIN_S or as soon as a call ends."""
        loop = asyncio.get_running_loop()
        while True:
            self._sweep_now.clear()
            started = loop.time()
            try:
                kept = await sweep(set(self._calls), dict(self._seen_s), self._channel_up)
            except Exception:  # the sweep must never die silently: look again later
                log.exception("credit_holds_sweep_crashed")
                kept = 1
            if not kept and not self._sweep_now.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_AGAIN_S):
                    await self._sweep_now.wait()
            await asyncio.sleep(max(0.0, started + SWEEP_GAP_S - loop.time()))

    async def _channel_up(self, channel_id: str) -> bool:
        try:
            await self._ops.get_channel(channel_id)
        except ChannelGone:
            return False
        except AriError:
            return True  # cannot tell now: kept, asked again at the next sweep
        return True

    def _recover_lost(self, in_app: set[str], seen: dict[str, int]) -> int:
        """Record the calls a previous engine took that ended while no engine was connected; ``seen``
        gets the billed seconds of each recovered channel (a lower bound)."""
        journal = self._journal
        if journal is None:
            return 0
        owned = {call.call_id for call, _task in self._calls.values()}
        now = dt.datetime.now(dt.UTC)
        recovered = 0
        for leg, entry in list(journal.pending.items()):
            if entry.get("channel") in in_app or leg in owned:
                continue
            started = dt.datetime.fromisoformat(entry["started_at"])
            answered = dt.datetime.fromisoformat(entry["answered_at"]) if entry.get("answered_at") else None
            # The end is unknown: after the previous engine's last sign of life, before now. The CDR
            # takes the earlier bound (never bill more than certain) and keeps the later one.
            last_seen = journal.previous_activity or started
            record = CdrRecord(
                leg_id=uuid.UUID(leg), call_id=uuid.UUID(entry.get("call", leg)), direction="inbound",
                from_number=to_e164(str(entry.get("caller", "")), None),
                to_number=to_e164(str(entry.get("called", "")), None),
                started_at=started, answered_at=answered, ended_at=max(last_seen, answered or started),
                disposition="ANSWERED" if answered else "NO ANSWER", hangup_cause=None,
                hangup_reason="ended while no engine was connected", channel_id=str(entry.get("channel", "")),
                extra={"outcome": "ended_without_engine", "incomplete": True, "ended_before": now.isoformat()},
            )
            self._cdrs.submit(record)
            journal.closed(leg)
            seen[record.channel_id] = record.billed_s
            recovered += 1
        if recovered:
            log.warning("calls_recovered_from_journal", count=recovered)
        return recovered

    # -- shutdown ------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop taking calls; let calls finish within ``grace_s``; then cut the rest (CDRs still written)."""
        self.accepting = False
        tasks = [task for _call, task in self._calls.values()]
        if tasks:
            log.info("draining_calls", active=len(tasks), grace_s=grace_s)
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("calls_cut_at_shutdown", count=len(pending))
                await asyncio.wait(pending, timeout=END_WAIT_S + 5)
        if self._side_tasks:
            await asyncio.wait(list(self._side_tasks), timeout=5)
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            await asyncio.wait([self._sweep_task], timeout=5)
