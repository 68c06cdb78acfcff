"""Conference rooms across nodes (issue 18, docs/conferences.md "Several nodes"): which node holds a
room, how an admitted caller is handed to it over the inter-node trunk, and how a hopped member joins
the room here. A part of ConferenceService (its mixin), kept apart from admission.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from callctl.calls.port import CallPort
from callctl.conference import minutes
from callctl.conference.affinity import HOP_EXTEN, MEMBER_HEADER, MemberPass, RoomLeases, endpoint_of, peer_of
from callctl.conference.room import ORGANIZER, Member, Room, RoomOps, RoomRecorder
from callctl.errors import AriError, CallHungUp, StoreError
from callctl.logging import get_logger
from callctl.store import conferences as store
from callctl.store import minutes as minutes_store

log = get_logger("callctl.conference")

HOP_RING_S = 4.0  # the owner node answers a hop within milliseconds (measured); longer means it is gone


class Play(Protocol):
    """How the conference says its prompts: names or media, in the call's language (the flow's ``ctx.play``)."""

    async def __call__(self, items: Sequence[str], /, *, interruptible: bool = True) -> str | None: ...


class Recorder(RoomRecorder, Protocol):
    """The rooms' recorder (callctl.recording.conference.ConferenceRecorder)."""

    async def tell_before_join(self, room: Room, member: Member,
                               play: Callable[[list[str]], Awaitable[Any]]) -> None: ...


class ChannelVars(Protocol):
    async def get_var(self, channel_id: str, name: str) -> str | None: ...


class RefusalPrompts(Protocol):
    """What a refused hopped member hears (the service's EntryPrompts)."""

    @property
    def locked(self) -> tuple[str, ...]: ...
    @property
    def full(self) -> tuple[str, ...]: ...
    @property
    def in_use(self) -> tuple[str, ...]: ...
    @property
    def over(self) -> tuple[str, ...]: ...


class NodeHops:
    """ConferenceService's several-node part (what it needs of the service is declared below)."""

    if TYPE_CHECKING:
        _pool: Any
        _ops: RoomOps
        _leases: RoomLeases | None
        _channel_vars: ChannelVars | None
        _recorder: Recorder | None
        _meter_ops: minutes.MeterOps | None
        _hop_prompts: RefusalPrompts  # a hopped member's refusals: the stock prompts

        def _room_for(self, conf: store.Conference) -> Room: ...
        def _spawn(self, coro: Any, failure_event: str) -> None: ...
        async def _in_room(self, call: CallPort, play: Play, room: Room, member: Member) -> None: ...

    async def _owner_of(self, conf: store.Conference) -> str | None:
        """The other node that holds this conference's room, or None when this engine holds it (it took
        or renewed the lease) or runs alone. Without the database the room is held here: callers to an
        open conference still get in (two rooms at worst, for as long as the outage lasts)."""
        if self._leases is None:
            return None
        try:
            owner = await self._leases.claim(conf.id)
        except StoreError as exc:
            log.warning("conference_lease_unavailable", conference_id=str(conf.id), error=str(exc))
            return None
        return None if owner == self._leases.node else owner

    async def _hop(self, call: CallPort, match: store.CodeMatch, owner: str, caller: str,
                   hold: minutes_store.Hold | None, paid: minutes.PaidLine | None) -> str:
        """Hand an admitted caller to the node that holds the room: dial its engine over the inter-node
        trunk, the member's identity in a header, and bridge the two legs here until either ends. The
        owner's room applies every rule and hears every key; this node keeps the caller's CDR (with the
        conference, person and role) and the organizer-paid meter."""
        conf = match.conference
        member = MemberPass(conf.id, match.email, match.role, str(call.call_id), call.language, caller)
        call.result.conference_id, call.result.person, call.result.role = str(conf.id), match.email, match.role
        call.result.extra["room_node"] = owner
        log.info("conference_member_hop", conference_id=str(conf.id), owner=owner)
        meter = None
        if paid is not None and hold is not None and self._meter_ops is not None:
            async def out_of_room() -> None:
                if call.legs:
                    with contextlib.suppress(AriError):
                        await self._ops.hang_up(call.legs[-1].channel_id, "normal")
            meter = minutes.LegMeter(self._pool, self._meter_ops, paid, hold, channel_id=call.channel_id,
                                     language=call.language, local_number=paid.local_for(conf.access_numbers),
                                     on_exhausted=out_of_room)
        try:
            if meter is not None:
                await meter.start()
            outcome = await call.dial(f"PJSIP/{HOP_EXTEN}@{endpoint_of(owner)}", timeout_s=HOP_RING_S,
                                      headers={MEMBER_HEADER: member.encode()})
        finally:
            if meter is not None:
                await meter.close()
        if meter is not None and meter.moved:
            await minutes.wait_for_moved_leg_end(call)
            return "conference_left"
        if outcome.status != "answered":
            log.warning("conference_owner_unreachable", conference_id=str(conf.id), owner=owner,
                        status=outcome.status, cause=outcome.cause)
            return "room_unreachable"
        return "conference_left"

    async def _wait_for_takeover(self, call: CallPort, conf: store.Conference) -> bool:
        """The owner did not take the hop (node dead, or its engine gone and its node refusing calls):
        its lease runs out within ``conference_lease_s`` since it stopped renewing. The caller hears
        music meanwhile; True once this node holds the room (the caller joins it here)."""
        assert self._leases is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leases.lease_s + 2.0
        with contextlib.suppress(AriError):
            await self._ops.start_moh(call.channel_id)
        try:
            while loop.time() < deadline:
                await call.read_digit(1.0)  # a second between polls of the lease; raises if the caller left
                if await self._owner_of(conf) is None:
                    log.info("conference_room_taken_over", conference_id=str(conf.id), node=self._leases.node)
                    return True
            return False
        finally:
            with contextlib.suppress(AriError):
                await self._ops.stop_moh(call.channel_id)

    async def take_hop(self, call: CallPort, _plan: Any) -> str | None:
        """The router's number handler for members another node hands to this one's rooms: None for any
        call that did not come in on a peer node's endpoint (a caller cannot claim an identity)."""
        peer = peer_of(call.channel_name)
        if peer is None or call.called != HOP_EXTEN or self._leases is None or self._channel_vars is None:
            return None
        call.result.flow = "conference-hop"
        call.result.extra.update(hop_from=peer)
        call.result.disposition = "NODE_HOP"  # not the caller's CDR: the admitting node's one is
        try:
            member = MemberPass.decode(await self._channel_vars.get_var(call.channel_id,
                                                                       f"PJSIP_HEADER(read,{MEMBER_HEADER})"),
                                       call.channel_name)
        except ValueError as exc:
            log.warning("conference_hop_refused", reason="bad_member_header", error=str(exc))
            await call.hang_up("normal")
            return "hop_refused"
        call.language = member.language
        call.result.conference_id = str(member.conference_id)
        call.result.extra.update(hop_leg=member.leg_id)
        try:
            conf = await store.get(self._pool, member.conference_id)
        except StoreError as exc:
            log.error("conference_store_unavailable", error=str(exc))
            await call.hang_up("congestion")
            return "store_unavailable"
        owner = None
        if conf is not None:
            try:
                owner = await self._leases.claim(member.conference_id)
            except StoreError as exc:  # a member sent here belongs here: the room is open or opens
                log.warning("conference_lease_unavailable", conference_id=str(conf.id), error=str(exc))
                owner = self._leases.node
        if conf is None or owner != self._leases.node:
            # The lease moved on (this engine was away longer than it): the admitting node asks again.
            log.warning("conference_hop_refused", reason="not_owner", conference_id=str(member.conference_id),
                        owner=owner)
            await call.hang_up("congestion")
            return "hop_refused"
        await call.answer()
        return await self._join_hopped(call, conf, member)

    async def _join_hopped(self, call: CallPort, conf: store.Conference, member_pass: MemberPass) -> str:
        p = self._hop_prompts
        member = Member(call.channel_id, member_pass.person, member_pass.role, member_pass.leg_id,
                        member_pass.language)
        room = self._room_for(conf)
        if room.recording and self._recorder is not None:
            await self._recorder.tell_before_join(room, member, lambda media: call.play(media, interruptible=False))
        result = await room.join(member)
        if result == "ended":
            room = self._room_for(conf)
            result = await room.join(member)
        if result not in ("joined", "waiting"):
            await store.record_attempt(self._pool, member_pass.caller, HOP_EXTEN, result, conf.id)
            log.info("conference_join_refused", reason=result, conference_id=str(conf.id))
            await call.play(list({"locked": p.locked, "full": p.full, "in_use": p.in_use}.get(result, p.over)),
                            interruptible=False)
            return result
        if member.role == ORGANIZER and conf.started_at is None:
            self._spawn(store.mark_started(self._pool, conf.id), "conference_start_write_failed")
        try:
            await self._in_room(call, call.play, room, member)
        except CallHungUp:
            room.leave(member, "hangup")
            raise
        room.leave(member, "ended")
        return "conference_left"
