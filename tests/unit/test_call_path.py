"""The seams of the call path, fast: the router's order, CDRs built from typed results, the credit-hold
sweep told of ended calls, the side tasks' owner, the CLI hooks between features."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from callctl import clitools
from callctl.billing import holds
from callctl.billing.holds import HoldSweeper
from callctl.calls.lifecycle import Lifecycle, dial_status, disposition_for
from callctl.calls.records import CallFacts, call_record, leg_record, recovered_record
from callctl.calls.result import CallResult, EndedCall, OutboundLeg, Rating
from callctl.errors import CallHungUp
from callctl.flows.loader import load_dialplan
from callctl.flows.simulate import FakeCall
from callctl.ids import ChannelId
from callctl.router import Router
from callctl.tasks import SideTasks
from tests.support.waiting import wait_for_async

T0 = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


# -- the router -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan() -> Any:
    import callctl.conference.steps  # noqa: F401 - its step type, so the demo dialplan loads

    return load_dialplan(REPO / "dialplan")


def _router(plan: Any, taken: list[str]) -> Router:
    router = Router(lambda: plan)

    def handler(name: str, outcome: str | None = "handled") -> Any:
        async def handle(call: Any, _plan: Any) -> str | None:
            taken.append(name)
            if outcome is not None:
                call.result.flow = name
            return outcome
        return handle

    router.on_resumed(handler("resumed"))
    router.on_arg("callctl-originate", handler("originated"))
    router.on_arg("line-outbound", handler("line-outbound"))
    router.on_number(handler("not-a-did", None))
    router.on_number(handler("did"))
    return router


async def test_the_router_takes_resumed_calls_first_then_stasis_args_then_numbers(plan: Any) -> None:
    taken: list[str] = []
    router = _router(plan, taken)
    resumed = FakeCall(called="+33900000001", args=("line-outbound",))
    resumed.resumed = (object(), "call-x")  # type: ignore[assignment]
    assert await router(resumed) == ("handled", "resumed", plan.version)
    assert resumed.result.dialplan_version == plan.version
    assert await router(FakeCall(called="+33900000001", args=("callctl-originate", "x"))) == (
        "handled", "originated", plan.version)
    assert (await router(FakeCall(called="0123", args=("line-outbound",))))[1] == "line-outbound"
    # A number the dialplan does not know: the number handlers in turn, the first that takes it.
    assert await router(FakeCall(called="+33199999999")) == ("handled", "did", plan.version)
    assert taken == ["resumed", "originated", "line-outbound", "not-a-did", "did"]


async def test_a_number_of_the_dialplan_runs_its_flow_and_an_unknown_one_is_told_no_route(plan: Any) -> None:
    taken: list[str] = []
    router = Router(lambda: plan)
    own = next(e.number for e in plan.numbers if e.number)
    call = FakeCall(called=own, hang_up_after_plays=0)
    with pytest.raises(CallHungUp):  # the caller hangs up at the first prompt
        await router(call)
    assert call.result.flow == plan.route(own).flow and call.country == plan.route(own).country
    assert taken == []


class _NoNumbers:
    version = "v-empty"

    def route(self, called: str) -> None:
        return None


async def test_a_number_nobody_takes_is_told_so_and_hung_up() -> None:
    router = Router(lambda: _NoNumbers())  # type: ignore[arg-type, return-value]
    lost = FakeCall(called="+33199999999")
    assert await router(lost) == ("no_route", None, "v-empty")
    assert lost.hung_up == "unallocated" and lost.log == ["play sound:ss-noservice"]


# -- CDRs from typed results --------------------------------------------------------------------------

def test_a_call_record_takes_its_tags_extras_and_rating_from_the_result() -> None:
    lc = Lifecycle(started_at=T0)
    lc.answered(T0 + dt.timedelta(seconds=2))
    lc.ended(T0 + dt.timedelta(seconds=62, milliseconds=1), 16, "Normal Clearing")
    result = CallResult(flow="line-outbound", account_id="acc", user_id="usr", disposition="EMERGENCY_REFUSED",
                        extra={"refused": "credit"})
    result.rating.update({"cost": Decimal("0.0300"), "currency": "EUR"})
    call_id = str(uuid.uuid4())
    record = call_record(CallFacts(call_id, "chan", "0612345678", "0170000001", "FR", "completed"), lc, result,
                         T0 + dt.timedelta(minutes=5))
    assert (record.from_number, record.to_number) == ("+33612345678", "+33170000001")
    assert record.disposition == "EMERGENCY_REFUSED" and record.billed_s == 61
    assert record.extra == {"outcome": "completed", "ended_by": lc.ended_by, "refused": "credit"}
    assert (record.account_id, record.cost, record.currency) == ("acc", Decimal("0.0300"), "EUR")

    leg = OutboundLeg(ChannelId(str(uuid.uuid4())), "PJSIP/+442071234567@pstn", Lifecycle(started_at=T0),
                      "+33170000001")
    leg.rating.update({"cost": Decimal(0), "included": True})
    leg_cdr = leg_record(record, leg, "FR", T0 + dt.timedelta(minutes=5))
    assert leg_cdr.call_id == record.call_id and leg_cdr.to_number == "+442071234567"
    assert leg_cdr.hangup_reason == "end not reported by Asterisk" and leg_cdr.included is True
    assert leg_cdr.account_id == "acc" and leg_cdr.direction == "outbound"


def test_an_unknown_rating_column_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rating column 'price'"):
        Rating().update({"price": Decimal(1)})


def test_a_recovered_call_is_billed_to_the_last_sign_of_life_and_keeps_the_later_bound() -> None:
    leg = str(uuid.uuid4())
    entry = {"started_at": T0.isoformat(), "answered_at": (T0 + dt.timedelta(seconds=5)).isoformat(),
             "channel": "c1", "caller": "+33612345678", "called": "+33170000001"}
    record = recovered_record(leg, entry, T0 + dt.timedelta(seconds=65), T0 + dt.timedelta(minutes=10))
    assert record.billed_s == 60 and record.extra["incomplete"] is True
    assert record.extra["ended_before"] == (T0 + dt.timedelta(minutes=10)).isoformat()


def test_dial_outcomes_and_cdr_dispositions_group_q850_causes_alike() -> None:
    groups = {"busy": "BUSY", "noanswer": "NO ANSWER", "congestion": "CONGESTION", "failed": "FAILED"}
    for cause in (16, 17, 18, 19, 21, 34, 38, 41, 42, 44, 47, 1, 28, 127, None):
        assert groups[dial_status(cause)] == disposition_for(False, cause), cause


# -- the credit-hold sweep, told of ended calls ---------------------------------------------------------

async def test_the_hold_sweep_runs_at_resync_and_again_when_an_adopted_call_ends(monkeypatch: Any) -> None:
    monkeypatch.setattr(holds, "SWEEP_GAP_S", 0.0)
    sweeps: list[tuple[set[str], dict[str, int]]] = []
    kept = [1]

    async def sweep(live: Any, known_s: Any, is_up: Any) -> int:
        sweeps.append((set(live), dict(known_s)))
        return kept[0]

    async def channel_up(channel_id: str) -> bool:
        return True

    sweeper = HoldSweeper(sweep, lambda: {"up"}, channel_up)
    sweeper.resynced({"gone": 12})
    await wait_for_async(lambda: len(sweeps) == 1, "the sweep at resync")
    assert sweeps[0] == ({"up"}, {"gone": 12})
    kept[0] = 0
    sweeper.call_ended(EndedCall("up", 40, adopted=True))  # a call a dead engine started
    await wait_for_async(lambda: len(sweeps) == 2, "the sweep after the adopted call ended")
    assert sweeps[1][1] == {"gone": 12, "up": 40}
    await sweeper.close()


async def test_a_call_of_this_engine_ending_does_not_start_a_sweep() -> None:
    calls: list[int] = []

    async def sweep(live: Any, known_s: Any, is_up: Any) -> int:
        calls.append(1)
        return 0

    async def channel_up(channel_id: str) -> bool:
        return False

    sweeper = HoldSweeper(sweep, set, channel_up)
    sweeper.call_ended(EndedCall("c", 3, adopted=False))
    await asyncio.sleep(0)
    assert calls == []
    await sweeper.close()


# -- side tasks, CLI hooks --------------------------------------------------------------------------------

async def test_side_tasks_are_kept_until_done_and_a_failure_is_logged_not_lost() -> None:
    tasks = SideTasks("test_side_task_failed")
    gate = asyncio.Event()

    async def waits() -> None:
        await gate.wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    tasks.spawn(waits())
    tasks.spawn(fails())
    await wait_for_async(lambda: len(tasks) == 1, "the failed task to be logged and dropped")
    assert not await tasks.wait_for_done(0.01)
    gate.set()
    assert await tasks.wait_for_done(1.0) and len(tasks) == 0


def test_parse_now_needs_iso_8601_with_a_time_zone() -> None:
    assert clitools.parse_now("2026-12-01T14:00:00+00:00") == dt.datetime(2026, 12, 1, 14, tzinfo=dt.UTC)
    with pytest.raises(Exception, match="has no time zone"):
        clitools.parse_now("2026-12-01T14:00:00")
    with pytest.raises(Exception, match="is not ISO 8601"):
        clitools.parse_now("yesterday")


def test_every_feature_adds_its_account_actions_to_one_group() -> None:
    from callctl.cli import build_parser

    parser = build_parser()
    for action in ("create", "show", "emergency", "recording", "suspend", "resume"):
        args = parser.parse_args(["account", action, *_args(action)])
        assert args.account_command == action


def _args(action: str) -> list[str]:
    some = str(uuid.uuid4())
    return {"create": ["--name", "x", "--country", "FR"], "show": [some],
            "emergency": [some, "--disable"], "recording": [some, "--enable"],
            "suspend": [some], "resume": [some]}[action]


# -- a call resumed after a restart ---------------------------------------------------------------------

async def test_a_resumed_call_warns_before_the_limit_left_in_asterisk_and_hands_the_bridge_to_its_hooks(
        monkeypatch: Any) -> None:
    from callctl.ari.events import ChannelDestroyed, ChannelInfo
    from callctl.calls import call as call_module
    from callctl.calls.call import Call
    from callctl.calls.port import DialHooks
    from tests.unit.test_calls import FakeOps, channel

    monkeypatch.setattr(call_module, "LIMIT_WARNING_S", 0.0)
    ops = FakeOps()
    leg = "5f0c8a0e-7b55-4c1e-9a39-2d6f3c1b9e03"
    ops.existing[leg] = {"id": leg}
    ops.variables = {(leg, "TIMEOUT(absolute)"): "0.200"}  # type: ignore[attr-defined]
    box: asyncio.Queue[Any] = asyncio.Queue()
    call = Call(ops, channel("caller"), box)  # type: ignore[arg-type]
    call.resumed = (ChannelInfo.from_json({"id": leg, "name": "PJSIP/pstn-1", "state": "Up",
                                           "creationtime": "2026-11-23T10:00:00.000+0000"}), f"call-{leg}")
    resumed: list[tuple[str, str, str]] = []

    async def on_resumed(bridge_id: str, caller: str, far: str) -> None:
        resumed.append((bridge_id, caller, far))

    task = asyncio.create_task(call.resume_bridged("PJSIP/+33123456789@pstn", hooks=DialHooks(on_resumed=on_resumed)))
    await wait_for_async(lambda: any(c[0] == "play" and c[1][1] == ("sound:beep",) for c in ops.calls),
                         "the warning beep on the caller's channel")
    assert resumed == [(f"call-{leg}", "caller", leg)]
    box.put_nowait(ChannelDestroyed(T0 + dt.timedelta(seconds=30), ChannelId(leg), 16, "Normal Clearing"))
    outcome = await task
    assert outcome.status == "answered" and ("destroy_bridge", f"call-{leg}") in ops.calls


def test_the_journal_lists_the_legs_each_call_dialled(tmp_path: Path) -> None:
    from callctl.cdr.journal import CallJournal

    journal = CallJournal(tmp_path)
    journal.opened("call-1", channel="c1", started_at=T0.isoformat())
    journal.dialled("call-1", "leg-a")
    journal.dialled("call-1", "leg-b")
    journal.opened("call-2", channel="c2", started_at=T0.isoformat())
    journal.closed("call-2")
    journal.close()
    after_restart = CallJournal(tmp_path)
    assert after_restart.pending["call-1"]["dialled"] == ["leg-a", "leg-b"] and "call-2" not in after_restart.pending
    after_restart.close()


async def test_adoption_cancels_the_attempts_a_dead_engine_left_ringing_and_orphan_legs_are_hung_up(
        tmp_path: Path) -> None:
    from callctl.ari.events import StasisStart
    from callctl.calls.supervisor import Supervisor
    from callctl.cdr.journal import CallJournal
    from callctl.metrics import Metrics
    from tests.unit.test_calls import FakeOps, Sink, channel

    ops, sink = FakeOps(), Sink()
    info = channel("caller")
    first = CallJournal(tmp_path)
    sup = Supervisor(ops, sink, None, Metrics(), lambda: "ast", first)  # type: ignore[arg-type]
    first.opened(sup.call_id_of(info), channel="caller", started_at=T0.isoformat())
    first.dialled(sup.call_id_of(info), "ringing-leg")
    first.close()
    started: list[tuple[str, bool]] = []

    async def flow(call: Any) -> tuple[str, str | None, str | None]:
        started.append((call.channel.id, ("hangup", ("ringing-leg", "normal")) in ops.calls))
        return "completed", None, None

    journal = CallJournal(tmp_path)  # the next engine
    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast", journal)
    ops.channels_in_app = {"caller"}
    ops.existing["caller"] = {"id": "caller", "state": "Ring", "caller": {"number": "1"},
                              "dialplan": {"exten": "+33900000001"}, "creationtime": info.created_raw}
    await sup.resync()
    await wait_for_async(lambda: started, "the call routed again")
    assert started == [("caller", True)]  # the old attempt was cancelled before the call was routed again
    sup.dispatcher.route(StasisStart(T0, channel("late-leg"), ("callctl-leg",)))
    await wait_for_async(lambda: ("hangup", ("late-leg", "normal")) in ops.calls, "the orphan leg hung up")
    await sup.drain(1.0)
    journal.close()


async def test_resync_takes_over_only_channels_in_stasis_and_hangs_up_an_answered_leg_nobody_owns() -> None:
    from callctl.calls.supervisor import Supervisor
    from callctl.metrics import Metrics
    from tests.unit.test_calls import FakeOps, Sink

    ops, sink = FakeOps(), Sink()
    started: list[str] = []

    async def flow(call: Any) -> tuple[str, str | None, str | None]:
        started.append(call.channel.id)
        return "completed", None, None

    base = {"state": "Up", "caller": {"number": "1"}, "creationtime": "2026-11-23T10:00:00.000+0000"}
    ops.existing = {
        "a-ringing-leg": {**base, "id": "a-ringing-leg", "dialplan": {"exten": "s", "app_name": "", "app_data": ""}},
        "b-answered-leg": {**base, "id": "b-answered-leg",
                           "dialplan": {"exten": "s", "app_name": "Stasis", "app_data": "callctl,callctl-leg"}},
        "c-caller": {**base, "id": "c-caller",
                     "dialplan": {"exten": "+33900000001", "app_name": "Stasis", "app_data": "callctl"}},
    }
    ops.channels_in_app = set(ops.existing)
    sup = Supervisor(ops, sink, flow, Metrics(), lambda: "ast")
    await sup.resync()
    await wait_for_async(lambda: started, "the caller's call")
    assert started == ["c-caller"] and ("hangup", ("b-answered-leg", "normal")) in ops.calls
    assert not [c for c in ops.calls if c[0] == "hangup" and c[1][0] == "a-ringing-leg"]
    await sup.drain(1.0)
