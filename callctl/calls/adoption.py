"""Resynchronisation after every (re)connect to Asterisk: calls whose channel vanished while the
websocket was down are closed, channels in the app that no task owns are adopted (a two-party call a
previous engine bridged is resumed, not routed again), and calls a previous engine took that ended with
no engine connected are recorded from the open-calls journal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from callctl.ari.events import ChannelDestroyed, ChannelInfo, StasisEnd
from callctl.calls.call import CALL_BRIDGE_PREFIX, Call
from callctl.calls.records import VANISHED, recovered_record
from callctl.cdr.journal import CallJournal, OpenCall
from callctl.cdr.record import CdrRecord
from callctl.errors import AriError, ChannelGone
from callctl.ids import ChannelId
from callctl.logging import get_logger

log = get_logger("callctl.calls")

CANCEL_WAIT_S = 2.0  # how long a cancelled attempt may take to leave Asterisk before the call goes on
GONE_POLL_S = 0.05
LEG_ARG = "callctl-leg"  # Stasis arg of a leg a call dialled: owned by that call, never a call of its own


class ResyncOps(Protocol):
    async def hang_up(self, channel_id: str, reason: str = "normal") -> None: ...
    async def application_channel_ids(self) -> set[str]: ...
    async def get_channel(self, channel_id: str) -> dict[str, Any]: ...
    async def bridges(self) -> dict[str, list[str]]: ...


class CallOwner(Protocol):
    """The supervisor as resynchronisation sees it."""

    @property
    def accepting(self) -> bool: ...
    def owned(self) -> Mapping[ChannelId, Call]: ...
    def start_call(self, channel: ChannelInfo, *, adopted: bool, args: tuple[str, ...] = (),
                   resumed: tuple[ChannelInfo, str] | None = None) -> None: ...
    def hand_back(self, channel_id: ChannelId) -> None: ...
    def journal_entry(self, channel: ChannelInfo) -> Mapping[str, Any]: ...
    @property
    def lost_at(self) -> dt.datetime | None: ...


class Resync:
    def __init__(self, ops: ResyncOps, owner: CallOwner, submit: Callable[[CdrRecord], None],
                 journal: CallJournal | None) -> None:
        self._ops = ops
        self._owner = owner
        self._submit = submit
        self._journal = journal

    async def channel_up(self, channel_id: str) -> bool:
        """Is the channel still in Asterisk? True when it cannot be told now (asked again later)."""
        try:
            await self._ops.get_channel(channel_id)
        except ChannelGone:
            return False
        except AriError:
            return True
        return True

    async def run(self) -> dict[str, int]:
        """One resynchronisation; returns the billed seconds of each call recovered from the journal
        (by channel: a lower bound, for the credit-hold sweep)."""
        in_app = await self._ops.application_channel_ids()
        await self._close_vanished(in_app)
        adopted = await self._adopt(in_app)
        seen: dict[str, int] = {}
        recovered = self._recover_lost(in_app, seen)
        log.info("ari_resynced", in_app=len(in_app), adopted=adopted, recovered=recovered,
                 active=len(self._owner.owned()))
        return seen

    async def _close_vanished(self, in_app: set[str]) -> None:
        """Calls whose channel left the app while the websocket was down (Asterisk dropped those events)."""
        for channel_id, call in list(self._owner.owned().items()):
            if channel_id in in_app:
                continue
            try:
                await self._ops.get_channel(channel_id)
                call.deliver(StasisEnd(dt.datetime.now(dt.UTC), channel_id))
            except ChannelGone:
                # Ended at some moment while the connection was down: the CDR takes the drop (never bill
                # more than certain) and is marked incomplete (callctl.calls.records).
                call.deliver(ChannelDestroyed(self._owner.lost_at or dt.datetime.now(dt.UTC), channel_id, None,
                                              VANISHED))

    async def _adopt(self, in_app: set[str]) -> int:
        # Two-party calls a previous engine bridged ("call-<leg>": the caller and the leg it dialled):
        # the caller's call resumes them (Call.resume_bridged), the leg is not a call of its own.
        unowned = in_app - set(self._owner.owned())
        pairs = await self._bridged_pairs(unowned) if unowned else {}
        legs = {leg for leg, _bridge in pairs.values()}
        adopted = 0
        for new_id in sorted(unowned - legs):
            try:
                raw = await self._ops.get_channel(new_id)
            except ChannelGone:
                continue
            info = ChannelInfo.from_json(raw)
            dialplan = raw.get("dialplan") or {}
            app, app_args = dialplan.get("app_name"), str(dialplan.get("app_data") or "").split(",")[1:]
            if app is not None and app != "Stasis":
                # Originated into the app but not answered yet (a leg still ringing, a dialer call): not a
                # call to take over; a leg is cancelled with its caller's call, a dialer call enters when answered.
                continue
            if LEG_ARG in app_args:  # an answered leg no bridge holds: nobody will ever take it over
                log.warning("orphan_leg_hung_up", channel=new_id)
                with contextlib.suppress(AriError):
                    await self._ops.hang_up(new_id, "normal")
                continue
            if not self._owner.accepting:
                self._owner.hand_back(info.id)
                continue
            resumed = None
            if new_id in pairs:
                leg_id, bridge_id = pairs[new_id]
                try:
                    resumed = (ChannelInfo.from_json(await self._ops.get_channel(leg_id)), bridge_id)
                except ChannelGone:
                    pass
            await self._cancel_attempts(info, keep=resumed[0].id if resumed else None)
            # With the arguments its Stasis() gave it (e.g. "line-outbound"): the router sends the call
            # where the first engine did, not to the flow of its called number.
            self._owner.start_call(info, adopted=True, args=tuple(a for a in app_args if a), resumed=resumed)
            adopted += 1
        return adopted

    async def _cancel_attempts(self, caller: ChannelInfo, keep: str | None) -> None:
        """Legs a previous engine dialled for this call (its journal) and did not bridge: still ringing,
        nobody would ever take them over, so they are hung up before the call is routed again (one
        attempt at a time: the callee's phone stops ringing, then rings once more)."""
        for channel in self._owner.journal_entry(caller).get("dialled", []):
            if not channel or channel == keep:
                continue
            try:
                await self._ops.hang_up(channel, "normal")
            except ChannelGone:
                continue  # ended meanwhile: nothing to cancel
            except AriError as exc:
                log.warning("abandoned_attempt_not_cancelled", leg=channel, error=exc.message)
                continue
            await self._wait_for_gone(channel, CANCEL_WAIT_S)
            log.info("abandoned_attempt_cancelled", leg=channel)

    async def _wait_for_gone(self, channel: str, timeout_s: float) -> None:
        """Until Asterisk has destroyed the channel (its CANCEL is out before a new attempt rings)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                # Polled: no task owns the leg, so its events are routed nowhere (once, at a restart).
                while await self.channel_up(channel):  # noqa: ASYNC110
                    await asyncio.sleep(GONE_POLL_S)

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

    def _recover_lost(self, in_app: set[str], seen: dict[str, int]) -> int:
        """Record the calls a previous engine took that ended while no engine was connected."""
        journal = self._journal
        if journal is None:
            return 0
        owned = {call.call_id for call in self._owner.owned().values()}
        now = dt.datetime.now(dt.UTC)
        recovered = 0
        for leg, entry in list(journal.pending.items()):
            if entry.get("channel") in in_app or leg in owned:
                continue
            # A call whose CDR went with a lost spool (its row in PostgreSQL says when it was closed) ended then.
            closed = dt.datetime.fromisoformat(entry["closed_at"]) if entry.get("closed_at") else None
            record = recovered_record(leg, entry, closed or journal.previous_activity, now)
            self._submit(record)
            journal.closed(leg)
            seen[record.channel_id] = record.billed_s
            recovered += 1
        if recovered:
            log.warning("calls_recovered_from_journal", count=recovered)
        return recovered


def orphan_recorder(submit: Callable[[CdrRecord], None]) -> Callable[[Sequence[OpenCall]], None]:
    """What an engine does with the open calls of a node gone for good (JournalMirror's takeover): their
    Asterisk went with the node, so each is recorded as a call that ended with no engine: an incomplete
    CDR whose end is the node's last sign of life (or the time its own engine closed it), never later."""

    def record(rows: Sequence[OpenCall]) -> None:
        now = dt.datetime.now(dt.UTC)
        for row in rows:
            record = recovered_record(row.leg, row.entry, row.closed_at or row.last_seen, now)
            submit(dataclasses.replace(record, extra={**record.extra, "node": row.node, "taken_over": True}))

    return record
