"""Owns every call task: starts one per channel entering Stasis (or adopted at a resync), runs the
router on it, hands calls back to the dialplan while draining, hands each finished call's CDRs to the
writer. Call tasks live in its own dict, not the daemon's TaskGroup: one failing call can never
cancel another call or a core service."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from callctl.ari.dispatch import Dispatcher, Mailbox
from callctl.ari.events import ChannelDestroyed, ChannelInfo, StasisStart
from callctl.calls.adoption import LEG_ARG, Resync, ResyncOps
from callctl.calls.call import Call, ChannelOps
from callctl.calls.records import ASTERISK_LOST, CallFacts, call_record, ensure_ended, leg_record
from callctl.calls.result import EndedCall
from callctl.cdr.journal import CallJournal
from callctl.cdr.record import CdrRecord, answered_seconds, leg_id_for
from callctl.errors import AriError, AriUnavailable, CallEnded, ChannelGone, StoreError
from callctl.ids import CallId, ChannelId
from callctl.logging import get_logger
from callctl.metrics import Metrics
from callctl.numbers import mask
from callctl.tasks import SideTasks

log = get_logger("callctl.calls")

FALLBACK_CONTEXT = "callctl-fallback"
# The Stasis() argument of a call Asterisk answered itself (extensions.conf [from-callers], callctl.preanswer):
# "answered=<epoch seconds with microseconds>", Asterisk's clock.
ANSWERED_ARG = "answered="
END_WAIT_S = 5.0


class SupervisorOps(ChannelOps, ResyncOps, Protocol):
    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str = "s",
                                   priority: int = 1) -> None: ...


class CdrSink(Protocol):
    def submit(self, record: CdrRecord) -> None: ...


class FlowRunner(Protocol):
    """Runs the call's script (``callctl.calls.router.Router``); returns (outcome, flow, dialplan version)."""

    async def __call__(self, call: Call) -> tuple[str, str | None, str | None]: ...


class CallEnds(Protocol):
    """Told of every call's end and of every resynchronisation (billing's credit-hold sweep)."""

    def call_ended(self, ended: EndedCall) -> None: ...
    def resynced(self, recovered_s: Mapping[str, int]) -> None: ...
    async def close(self) -> None: ...


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
        self._side = SideTasks("call_side_task_failed")
        self._resync = Resync(ops, self, cdrs.submit, journal)
        self.channel_up = self._resync.channel_up  # for billing's hold sweep
        self._listeners: list[CallEnds] = []
        self.accepting = True
        self.log_number_digits = 4
        self.lost_at: dt.datetime | None = None  # when the ARI connection dropped, until the next resync
        metrics.counter("callctl_calls_total", "Calls finished, by outcome")
        metrics.gauge("callctl_active_calls", "Calls in progress", lambda: len(self._calls))

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def tell_ends_to(self, listener: CallEnds) -> None:
        self._listeners.append(listener)

    def owned(self) -> Mapping[ChannelId, Call]:
        return {channel_id: call for channel_id, (call, _task) in self._calls.items()}

    # -- intake --------------------------------------------------------------------------------

    def on_stasis_start(self, event: StasisStart) -> None:
        """Called synchronously by the dispatcher for a channel no call owns yet."""
        if LEG_ARG in event.args:
            # A leg is owned by the call that dialled it (registered before it was originated). One that
            # nobody owns was dialled by a previous engine and answered too late: nobody waits for it.
            log.warning("orphan_leg_hung_up", channel=event.channel.id)
            self._side.spawn(_quietly(self._ops.hang_up(event.channel.id, "normal")))
            return
        if not self.accepting:
            self.hand_back(event.channel.id)
            return
        self.start_call(event.channel, adopted=False, args=event.args)

    def start_call(self, channel: ChannelInfo, *, adopted: bool, args: tuple[str, ...] = (),
                   resumed: tuple[ChannelInfo, str] | None = None) -> None:
        asterisk_answered_at, args = answered_arg(args)
        mailbox: Mailbox = asyncio.Queue()
        leg = self.call_id_of(channel)
        opened = self.journal_entry(channel)
        journal = self._journal
        call = Call(self._ops, channel, mailbox, register_leg=self._leg_registrar(mailbox), args=args,
                    on_answer=(lambda at: journal.answered(leg, at)) if journal is not None else None,
                    on_dial=(lambda ch: journal.dialled(leg, ch)) if journal is not None else None,
                    answered_at=dt.datetime.fromisoformat(opened["answered_at"]) if opened.get("answered_at") else None)
        call.call_id = CallId(leg)  # an inbound call's id is its first leg's id
        call.resumed = resumed
        if journal is not None:
            journal.opened(leg, call=leg, channel=channel.id, started_at=channel.created_at.isoformat(),
                           caller=channel.caller_number, called=channel.exten, args=list(args))
        if call.lifecycle.answered_at is None and channel.state == "Up":
            # Already answered when it reaches the app: a call Asterisk answered before Stasis() (its flow
            # starts with "answer": billed from Asterisk's answer, which it passes along), a call the engine
            # originated (the callee picked up; its flow may never answer itself, e.g. one that starts with a
            # dial step), or a call adopted with no journal entry. Billed from now, not from the flow's first
            # answer or bridge. The flow's own "answer" step is then a no-op (Call.answer).
            at = asterisk_answered_at or dt.datetime.now(dt.UTC)
            call.lifecycle.answered(at)
            if journal is not None:
                journal.answered(leg, at)
        self.dispatcher.register(channel.id, mailbox)
        task = asyncio.create_task(self._run_call(call, adopted), name=f"call-{channel.id}")
        self._calls[channel.id] = (call, task)

    def call_id_of(self, channel: ChannelInfo) -> str:
        """An inbound call's id: its first leg's id (the same for every engine that takes it)."""
        return str(leg_id_for(self._asterisk_id(), channel.id, channel.created_raw))

    def journal_entry(self, channel: ChannelInfo) -> Mapping[str, Any]:
        """What the open-calls journal says of the call on ``channel`` (a previous engine's, if any)."""
        return self._journal.pending.get(self.call_id_of(channel), {}) if self._journal is not None else {}

    def _leg_registrar(self, mailbox: Mailbox) -> Callable[[ChannelId, bool], None]:
        """Route a dialled leg's events to the mailbox of the call that dialled it."""

        def register(channel_id: ChannelId, on: bool) -> None:
            if on:
                self.dispatcher.register(channel_id, mailbox)
            else:
                self.dispatcher.unregister(channel_id)

        return register

    def hand_back(self, channel_id: ChannelId) -> None:
        """While draining: the channel goes back to the dialplan's fallback."""
        log.info("call_handed_back", channel=channel_id, reason="draining")
        self._side.spawn(_quietly(self._ops.continue_in_dialplan(channel_id, FALLBACK_CONTEXT)))

    def connection_lost(self, give_up_after_s: float) -> None:
        """The ARI connection dropped. Calls keep their tasks (the next resync adopts or closes them); if it
        is not back within ``give_up_after_s``, their Asterisk is taken as gone (one engine per node, on the
        loopback: docs/scaling.md) and they end at the moment it dropped, their CDRs marked incomplete."""
        if self.lost_at is not None:
            return
        at = self.lost_at = dt.datetime.now(dt.UTC)
        self._side.spawn(self._end_calls_if_still_lost(at, give_up_after_s))

    async def _end_calls_if_still_lost(self, at: dt.datetime, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if self.lost_at is not at or not self._calls:
            return
        log.warning("calls_ended_with_asterisk", count=len(self._calls), lost_at=at.isoformat())
        for call, _task in list(self._calls.values()):
            call.deliver(ChannelDestroyed(at, call.channel.id, None, ASTERISK_LOST))

    # -- one call ------------------------------------------------------------------------------

    async def _run_call(self, call: Call, adopted: bool) -> None:
        structlog.contextvars.bind_contextvars(call_id=call.call_id)
        started = time.monotonic()
        log.info("call_started", caller=mask(call.caller, self.log_number_digits), called=call.called,
                 channel=call.channel.id, adopted=adopted)
        outcome = "error"
        try:
            outcome, flow, version = await self._run_flow(call)
            call.result.flow = flow or call.result.flow
            call.result.dialplan_version = version or call.result.dialplan_version
        except (CallEnded, ChannelGone):
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
        try:
            record = await self._finish(call, outcome, time.monotonic() - started)
        finally:
            self._calls.pop(call.channel.id, None)
            self.dispatcher.unregister(call.channel.id)
        ended = EndedCall(call.channel.id, record.billed_s, adopted)
        for listener in self._listeners:
            listener.call_ended(ended)

    async def _finish(self, call: Call, outcome: str, elapsed_s: float) -> CdrRecord:
        with contextlib.suppress(AriError):
            await call.hang_up("normal")
        lost_at = self.lost_at
        if lost_at is None or call.lifecycle.ended_at is not None:
            await call.wait_for_end(END_WAIT_S)
        lc, result = call.lifecycle, call.result
        now = dt.datetime.now(dt.UTC)
        if lost_at is not None:  # no end will be reported: the last certain moment is when Asterisk went away
            for leg_lc in (lc, *(leg.lifecycle for leg in call.legs)):
                leg_lc.ended(lost_at, None, ASTERISK_LOST)
        if lc.hangup_reason == ASTERISK_LOST:
            outcome = "asterisk_lost"
        ended_at = ensure_ended(lc, now)
        if result.on_end is not None:
            try:
                result.rating.update(await result.on_end(answered_seconds(lc.answered_at, ended_at)))
            except StoreError as exc:  # the hold stays; the next sweep settles it from Asterisk's events
                log.warning("call_not_settled", error=exc.message)
        record = call_record(CallFacts(call.call_id, call.channel.id, call.caller, call.called, call.country,
                                       outcome), lc, result, now)
        self._cdrs.submit(record)
        for leg in call.legs:
            self._cdrs.submit(leg_record(record, leg, call.country, now))
        if self._journal is not None:
            self._journal.closed(call.call_id)
        self._metrics.inc("callctl_calls_total", outcome=outcome)
        log.info("call_finished", outcome=outcome, disposition=record.disposition, billed_s=record.billed_s,
                 duration_ms=int((ended_at - lc.started_at).total_seconds() * 1000),
                 hangup_cause=lc.hangup_cause, ended_by=lc.ended_by, flow=record.flow,
                 dialplan_version=record.dialplan_version, handled_ms=int(elapsed_s * 1000))
        structlog.contextvars.unbind_contextvars("call_id")
        return record

    # -- resynchronisation ---------------------------------------------------------------------

    async def resync(self) -> None:
        """After every (re)connect (``callctl.calls.adoption``); listeners hear of it once the calls
        still up are known."""
        recovered_s = await self._resync.run()
        self.lost_at = None
        for listener in self._listeners:
            listener.resynced(recovered_s)

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
        await self._side.wait_for_done(5)

    async def close(self) -> None:
        """After ``drain``: the listeners stop (the credit-hold sweep)."""
        for listener in self._listeners:
            await listener.close()


def answered_arg(args: tuple[str, ...]) -> tuple[dt.datetime | None, tuple[str, ...]]:
    """Asterisk's answer time from a pre-answered call's Stasis() argument ("answered=<epoch seconds>",
    extensions.conf [from-callers]), and the other arguments as the rest of the engine knows them.
    An unreadable time is dropped (the call is then billed from its arrival, as an Up channel always was)."""
    rest = tuple(a for a in args if not a.startswith(ANSWERED_ARG))
    if len(rest) == len(args):
        return None, args
    text = next(a for a in args if a.startswith(ANSWERED_ARG)).removeprefix(ANSWERED_ARG)
    try:
        return dt.datetime.fromtimestamp(float(text), dt.UTC), rest
    except (ValueError, OverflowError, OSError):
        log.warning("answered_arg_unreadable", value=text[:40])
        return None, rest


async def _quietly(request: Awaitable[None]) -> None:
    """An ARI request whose failure changes nothing (the channel went meanwhile)."""
    with contextlib.suppress(AriError):
        await request
