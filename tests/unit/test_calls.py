"""Call, lifecycle, dispatcher and supervisor with a fake ARI (fast); the real thing is in tests/integration."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest

from callctl.ari.dispatch import Dispatcher
from callctl.ari.events import (
    DECODED_TYPES,
    ChannelDestroyed,
    ChannelInfo,
    DtmfReceived,
    HangupRequest,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
    decode,
    parse_ari_time,
)
from callctl.calls.call import Call
from callctl.calls.lifecycle import Lifecycle, disposition_for
from callctl.calls.supervisor import Supervisor
from callctl.cdr.record import CdrRecord, answered_seconds
from callctl.errors import CallHungUp, ChannelGone
from callctl.ids import ChannelId, PlaybackId
from callctl.metrics import Metrics

T0 = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)


def channel(cid: str = "c1", exten: str = "+33900000001") -> ChannelInfo:
    return ChannelInfo(ChannelId(cid), "PJSIP/x", "Ring", "0612345678", "", exten, "from-callers", "en",
                       T0, "2026-11-23T10:00:00.000+0000")


class FakeOps:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.mailboxes: dict[str, asyncio.Queue[Any]] = {}
        self.channels_in_app: set[str] = set()
        self.existing: dict[str, dict[str, Any]] = {}

    async def answer(self, channel_id: str) -> None:
        self.calls.append(("answer", channel_id))

    async def set_var(self, channel_id: str, name: str, value: str) -> None:
        self.calls.append(("set_var", (channel_id, name)))

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None:
        self.calls.append(("play", (channel_id, tuple(media), playback_id)))

    async def stop_playback(self, playback_id: str) -> None:
        self.calls.append(("stop", playback_id))

    async def hang_up(self, channel_id: str, reason: str = "normal") -> None:
        self.calls.append(("hangup", (channel_id, reason)))
        box = self.mailboxes.get(channel_id)
        if box is not None:
            box.put_nowait(StasisEnd(T0 + dt.timedelta(seconds=5), ChannelId(channel_id)))

    async def continue_in_dialplan(self, channel_id: str, context: str, extension: str = "s",
                                   priority: int = 1) -> None:
        self.calls.append(("continue", (channel_id, context)))

    async def application_channel_ids(self) -> set[str]:
        return set(self.channels_in_app)

    async def get_channel(self, channel_id: str) -> dict[str, Any]:
        if channel_id not in self.existing:
            raise ChannelGone(channel_id)
        return self.existing[channel_id]

    async def get_var(self, channel_id: str, name: str) -> str | None:
        return getattr(self, "variables", {}).get((channel_id, name))

    async def bridges(self) -> dict[str, list[str]]:
        return dict(getattr(self, "bridge_members", {}))

    async def destroy_bridge(self, bridge_id: str) -> None:
        self.calls.append(("destroy_bridge", bridge_id))


def make_call(ops: FakeOps, cid: str = "c1") -> tuple[Call, asyncio.Queue[Any]]:
    box: asyncio.Queue[Any] = asyncio.Queue()
    ops.mailboxes[cid] = box
    return Call(ops, channel(cid), box), box


async def test_play_is_interrupted_by_a_digit_which_stays_buffered() -> None:
    ops = FakeOps()
    call, box = make_call(ops)
    box.put_nowait(DtmfReceived(T0, ChannelId("c1"), "5"))
    # type-ahead: a buffered digit interrupts before the prompt even starts
    assert await call.play(["sound:x"]) == "5"
    assert await call.read_digit(0.1) == "5"
    task = asyncio.create_task(call.play(["sound:x"]))
    await _wait(lambda: ops.calls[-1:] != [] and ops.calls[-1][0] == "play")  # the second prompt is playing
    box.put_nowait(DtmfReceived(T0, ChannelId("c1"), "7"))
    assert await task == "7"
    assert ops.calls[-1][0] == "stop"


async def test_play_returns_none_when_the_prompt_finishes() -> None:
    ops = FakeOps()
    call, box = make_call(ops)
    task = asyncio.create_task(call.play(["sound:x"], interruptible=False))
    await _wait(lambda: ops.calls[-1:] != [] and ops.calls[-1][0] == "play")  # the prompt is playing
    playback_id = ops.calls[-1][1][2]
    box.put_nowait(DtmfReceived(T0, ChannelId("c1"), "1"))
    box.put_nowait(PlaybackFinished(T0, ChannelId("c1"), PlaybackId(playback_id), "done"))
    assert await task is None


async def test_hangup_mid_prompt_raises_call_hung_up_at_the_next_await() -> None:
    ops = FakeOps()
    call, box = make_call(ops)
    task = asyncio.create_task(call.play(["sound:x"]))
    await _wait(lambda: ops.calls[-1:] != [] and ops.calls[-1][0] == "play")  # the prompt is playing
    box.put_nowait(HangupRequest(T0, ChannelId("c1"), 16))
    with pytest.raises(CallHungUp):
        await task
    with pytest.raises(CallHungUp):
        await call.read_digit(1)


async def test_read_digit_times_out_with_none() -> None:
    call, _box = make_call(FakeOps())
    assert await call.read_digit(0.05) is None


def test_disposition_and_billed_seconds_boundaries() -> None:
    assert disposition_for(True, 16) == "ANSWERED"
    assert disposition_for(False, 17) == "BUSY"
    assert disposition_for(False, 19) == "NO ANSWER"
    assert disposition_for(False, 34) == "CONGESTION"
    assert disposition_for(False, 1) == "FAILED"
    assert answered_seconds(None, T0) == 0
    assert answered_seconds(T0, T0) == 0
    assert answered_seconds(T0, T0 + dt.timedelta(milliseconds=1)) == 1
    assert answered_seconds(T0, T0 + dt.timedelta(seconds=60)) == 60
    assert answered_seconds(T0, T0 + dt.timedelta(seconds=60, milliseconds=1)) == 61


def test_lifecycle_keeps_the_first_end_and_never_ends_before_answer() -> None:
    lc = Lifecycle(started_at=T0)
    lc.answered(T0 + dt.timedelta(seconds=2))
    lc.ended(T0 + dt.timedelta(seconds=1), 16, "clock skew")
    assert lc.ended_at == T0 + dt.timedelta(seconds=2)
    lc.ended(T0 + dt.timedelta(seconds=9), 17, "late")
    assert lc.hangup_cause == 16 and lc.state == "ended"


def test_decode_ignores_unknown_events_and_maps_playbacks_to_their_channel() -> None:
    assert decode({"type": "ChannelVarset"}) is None
    ev = decode({"type": "PlaybackFinished", "timestamp": "2026-11-23T10:00:01.250+0000",
                 "playback": {"id": "p1", "target_uri": "channel:c9", "state": "done"}})
    assert isinstance(ev, PlaybackFinished) and ev.channel_id == "c9"
    assert ev.at == T0 + dt.timedelta(seconds=1, milliseconds=250)


def test_ari_timestamps_are_read_as_utc_with_their_milliseconds() -> None:
    assert parse_ari_time("2026-11-23T11:00:01.250+0100") == T0 + dt.timedelta(seconds=1, milliseconds=250)
    assert parse_ari_time("2026-11-23T10:00:01.250+0000").tzinfo == dt.UTC
    now = dt.datetime.now(dt.UTC)
    assert parse_ari_time("garbage") >= now and parse_ari_time(None) >= now  # a bad stamp is "now"


def test_the_event_filter_asks_asterisk_for_exactly_the_types_decode_uses() -> None:
    # client.py sends DECODED_TYPES as the app's "allowed" eventFilter: a type decode() maps but the
    # filter lacks would never arrive; one the filter allows but decode() drops is wasted work.
    samples = {"StasisStart": {"channel": {"id": "c1", "caller": {}, "dialplan": {}}, "args": []},
               "PlaybackFinished": {"playback": {"id": "p1", "target_uri": "channel:c1", "state": "done"}}}
    for kind in DECODED_TYPES:
        assert decode({"type": kind, "timestamp": "2026-11-23T10:00:01.250+0000", "channel": {"id": "c1"},
                       **samples.get(kind, {})}) is not None, kind
    for kind in ("PlaybackStarted", "ChannelEnteredBridge", "ChannelLeftBridge", "BridgeDestroyed",
                 "ChannelStateChange"):
        assert kind not in DECODED_TYPES and decode({"type": kind, "channel": {"id": "c1"}}) is None


def test_dispatcher_routes_to_owner_and_reports_new_channels() -> None:
    seen: list[StasisStart] = []
    d = Dispatcher(seen.append)
    box: asyncio.Queue[Any] = asyncio.Queue()
    d.register(ChannelId("c1"), box)
    d.route(DtmfReceived(T0, ChannelId("c1"), "1"))
    d.route(DtmfReceived(T0, ChannelId("other"), "1"))
    d.route(StasisStart(T0, channel("c2"), ()))
    assert box.qsize() == 1 and d.events_unrouted == 1 and seen[0].channel.id == "c2"


class Sink:
    def __init__(self) -> None:
        self.records: list[CdrRecord] = []

    def submit(self, record: CdrRecord) -> None:
        self.records.append(record)


async def _wait(cond: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling a fake's state with a deadline
            await asyncio.sleep(0.01)


async def test_a_failing_call_does_not_affect_another_and_both_leave_a_cdr() -> None:
    ops, sink = FakeOps(), Sink()
    release = asyncio.Event()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        ops.mailboxes[call.channel.id] = call._mailbox
        if call.channel.id == "bad":
            raise RuntimeError("bug in a step")
        await call.answer()
        await release.wait()
        await call.hang_up()
        return "completed", "demo", "v1"

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("good"), ()))
    sup.dispatcher.route(StasisStart(T0, channel("bad"), ()))
    await _wait(lambda: len(sink.records) == 1)
    assert sink.records[0].extra["outcome"] == "error"
    release.set()
    await _wait(lambda: len(sink.records) == 2)
    good = sink.records[1]
    assert good.disposition == "ANSWERED" and good.flow == "demo" and good.leg_id == good.call_id


async def test_draining_hands_new_calls_back_and_cuts_calls_after_the_grace() -> None:
    ops, sink = FakeOps(), Sink()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        ops.mailboxes[call.channel.id] = call._mailbox
        await call.answer()
        await asyncio.sleep(3600)
        return "completed", None, None

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("long"), ()))
    await _wait(lambda: ("answer", "long") in ops.calls)
    drain = asyncio.create_task(sup.drain(grace_s=0.1))
    await _wait(lambda: not sup.accepting)  # drain has started: the supervisor no longer accepts calls
    sup.dispatcher.route(StasisStart(T0, channel("late"), ()))
    await drain
    assert ("continue", ("late", "callctl-fallback")) in ops.calls
    assert [r.extra["outcome"] for r in sink.records] == ["cut_at_shutdown"]
    assert sup.active_calls == 0


async def test_resync_adopts_unknown_channels_and_closes_vanished_ones() -> None:
    ops, sink = FakeOps(), Sink()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        await call.answer()
        await call.read_digit(30)
        return "completed", None, None

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("vanished"), ()))
    await _wait(lambda: ("answer", "vanished") in ops.calls)
    ops.channels_in_app = {"survivor"}
    ops.existing["survivor"] = {"id": "survivor", "state": "Up", "caller": {"number": "1"},
                                "dialplan": {"exten": "+33900000001"}, "creationtime": "2026-11-23T10:00:00.000+0000"}
    await sup.resync()
    # Up already: adopted as answered (no second answer sent to Asterisk), its flow running.
    await _wait(lambda: "survivor" in sup.owned())
    assert sup.owned()[ChannelId("survivor")].lifecycle.answered_at is not None
    assert ("answer", "survivor") not in ops.calls
    await _wait(lambda: len(sink.records) == 1)
    assert sink.records[0].channel_id == "vanished"
    assert sink.records[0].hangup_reason == "hung up while the ARI connection was down"
    sup.dispatcher.route(ChannelDestroyed(T0, ChannelId("survivor"), 16, "Normal Clearing"))
    await _wait(lambda: len(sink.records) == 2)


async def test_resync_resumes_a_bridged_two_party_call_instead_of_running_its_flow_again() -> None:
    ops, sink = FakeOps(), Sink()
    leg = "5f0c8a0e-7b55-4c1e-9a39-2d6f3c1b9e01"

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        assert call.resumed is not None and call.resumed[0].id == leg  # never a fresh flow
        outcome = await call.resume_bridged("PJSIP/+33123456789@trunk", caller_id="+33170000001")
        return f"resumed_{outcome.status}", "line-outbound", None

    ops.channels_in_app = {"caller", leg}
    for cid in ("caller", leg):
        ops.existing[cid] = {"id": cid, "state": "Up", "caller": {"number": "1"}, "dialplan": {"exten": "0123456789"},
                             "creationtime": "2026-11-23T10:00:00.000+0000", "name": f"PJSIP/{cid}-1"}
    ops.bridge_members = {f"call-{leg}": ["caller", leg], "conf-x": []}  # type: ignore[attr-defined]
    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    await sup.resync()
    assert sup.active_calls == 1  # the leg belongs to the caller's call, not a call of its own
    await _wait(lambda: sup.dispatcher.owns(ChannelId(leg)))  # the resumed call listens to its leg
    sup.dispatcher.route(ChannelDestroyed(T0 + dt.timedelta(seconds=40), ChannelId(leg), 16, "Normal Clearing"))
    await _wait(lambda: ("hangup", ("caller", "normal")) in ops.calls)  # the far end left: the caller goes too
    sup.dispatcher.route(ChannelDestroyed(T0 + dt.timedelta(seconds=40), ChannelId("caller"), 16, "Normal Clearing"))
    await _wait(lambda: len(sink.records) == 2)
    first, dialled = sink.records
    assert first.extra["outcome"] == "resumed_answered"
    assert (dialled.leg_id, dialled.direction, dialled.to_number) == (uuid.UUID(leg), "outbound", "+33123456789")
    assert ("hangup", ("caller", "normal")) in ops.calls and ("destroy_bridge", f"call-{leg}") in ops.calls


async def test_calls_of_an_asterisk_that_went_away_end_when_the_connection_dropped() -> None:
    # One engine per node (docs/scaling.md): the ARI connection down for give_up_after_s means the
    # node's Asterisk is gone; its calls end at the drop, never billed longer, marked incomplete.
    ops, sink = FakeOps(), Sink()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        await call.answer()
        call.lifecycle.answered(T0)
        await call.read_digit(30)
        return "completed", None, None

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("held"), ()))
    await _wait(lambda: ("answer", "held") in ops.calls)
    sup.connection_lost(give_up_after_s=0.05)
    lost_at = sup.lost_at
    assert lost_at is not None
    await _wait(lambda: len(sink.records) == 1)
    [record] = sink.records
    assert record.ended_at == lost_at.replace(microsecond=lost_at.microsecond // 1000 * 1000)  # CDRs keep ms
    assert record.extra["outcome"] == "asterisk_lost"
    assert record.extra["incomplete"] is True and record.extra["ended_before"] >= lost_at.isoformat()


async def test_calls_survive_a_connection_drop_that_a_resync_ends_in_time() -> None:
    ops, sink = FakeOps(), Sink()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        await call.answer()
        await call.read_digit(30)
        return "completed", None, None

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("held"), ()))
    await _wait(lambda: ("answer", "held") in ops.calls)
    sup.connection_lost(give_up_after_s=0.1)
    ops.channels_in_app = {"held"}
    await sup.resync()
    assert sup.lost_at is None
    await asyncio.sleep(0.2)  # past give_up_after_s: nothing may happen to the call
    assert sink.records == [] and sup.active_calls == 1
    await sup.drain(grace_s=0.01)


async def test_a_call_found_gone_at_the_resync_ends_when_the_connection_dropped() -> None:
    ops, sink = FakeOps(), Sink()

    async def flow(call: Call) -> tuple[str, str | None, str | None]:
        await call.answer()
        call.lifecycle.answered(T0)
        await call.read_digit(30)
        return "completed", None, None

    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    sup.dispatcher.route(StasisStart(T0, channel("gone"), ()))
    await _wait(lambda: ("answer", "gone") in ops.calls)
    sup.connection_lost(give_up_after_s=60)
    lost_at = sup.lost_at
    assert lost_at is not None
    await asyncio.sleep(0.05)  # Asterisk restarted meanwhile: the channel is gone
    await sup.resync()
    await _wait(lambda: len(sink.records) == 1)
    [record] = sink.records
    assert record.ended_at == lost_at.replace(microsecond=lost_at.microsecond // 1000 * 1000)
    assert record.hangup_reason == "hung up while the ARI connection was down" and record.extra["incomplete"] is True
