"""The per-call trace: one TraceStep per step, keys of collected digits masked, kept when the caller hangs up."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from callctl.errors import CallHungUp
from callctl.flows.engine import CallTrace, TraceStep, run_flow
from callctl.flows.loader import load_dialplan
from callctl.flows.simulate import FakeCall, parse_dtmf

REPO = Path(__file__).resolve().parents[2]
import callctl.conference.steps  # noqa: E402,F401 - registers the conference step type

PLAN = load_dialplan(REPO / "dialplan")


async def traced(called: str, keys: str, **kw: object) -> tuple[list[TraceStep], FakeCall]:
    route = PLAN.route(called)
    assert route is not None
    call = FakeCall(called=called, groups=parse_dtmf(keys), **kw)  # type: ignore[arg-type]
    record = CallTrace()
    try:
        await run_flow(PLAN, route, call, record=record, now=lambda: dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC))
    except CallHungUp:
        pass
    assert record.current is None  # nothing left running
    return record.steps, call


async def test_menu_keys_are_kept_and_collected_digits_masked() -> None:
    steps, _ = await traced("+33900000002", "2 1234#")
    path = [(s.step, s.result) for s in steps]
    assert path == [("1:answer", "next"), ("main", "ask-code"), ("ask-code", "next"), ("6:play", "next"),
                    ("bye", "next"), ("8:hangup", "hang up (normal)")]
    menu, collect = steps[1], steps[2]
    assert menu.keys == "2" and menu.prompts == ("demo-menu",)
    assert collect.keys == "*****"  # 1234 and # never stored
    assert steps[3].prompts == ("you-entered", "digits:{code}")  # the template, not the digits
    assert all("1234" not in str(s.as_json()) for s in steps)
    assert all(s.ms >= 0 and s.flow == "demo-menu" for s in steps)


async def test_the_step_cut_short_by_a_hang_up_is_in_the_trace() -> None:
    steps, _ = await traced("+33900000002", "", hang_up_after_plays=0)
    assert [(s.step, s.result) for s in steps] == [("1:answer", "next"), ("main", "caller hung up")]


async def test_a_jump_to_another_flow_is_the_step_result() -> None:
    steps, _ = await traced("+33900000003", "1", dial_status="answered")
    assert steps[0].flow == "reception"
    assert any(s.kind == "menu" and s.keys == "1" for s in steps)


@pytest.mark.parametrize("keys", ["", "9"])
async def test_as_json_omits_empty_fields(keys: str) -> None:
    step = TraceStep("f", "s", "menu", "next", 12, keys)
    assert ("keys" in step.as_json()) == bool(keys)
    assert "prompts" not in step.as_json()


async def test_the_step_running_now_is_named_while_it_waits() -> None:
    route = PLAN.route("+33900000002")
    assert route is not None
    record = CallTrace()
    seen: list[tuple[str | None, str | None]] = []

    class Watched(FakeCall):
        async def read_digit(self, timeout_s: float) -> str | None:
            seen.append((record.flow, record.current))
            return await super().read_digit(timeout_s)

    await run_flow(PLAN, route, Watched(called="+33900000002", groups=parse_dtmf("1")), record=record)
    assert seen[0] == ("demo-menu", "main")
    assert record.current is None and record.steps[-1].result == "hang up (normal)"
