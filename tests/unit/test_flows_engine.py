"""The flow engine on a fake call: menus, collect with retries, time windows, hang-up mid-prompt,
a failing step, and the simulate command's output."""

from __future__ import annotations

import argparse
import datetime as dt
import textwrap
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from callctl.config import Settings
from callctl.errors import CallHungUp, DialplanError
from callctl.flows import cli, registry
from callctl.flows.engine import FlowResult, run_flow
from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan
from callctl.flows.simulate import FakeCall

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "countries.yaml": """\
        countries:
          FR: {name: France, timezone: Europe/Paris, language: fr,
               canvassing: {days: mon-fri, hours: ["10:00-13:00", "14:00-20:00"]}}
        """,
    "prompts.yaml": """\
        prompts:
          hello: sound:hello-world
          bye: sound:vm-goodbye
          invalid: sound:pbx-invalid
          silence: sound:vm-sorry
          menu:
            en: {text: "Press 1 or 2."}
            fr: {text: "Tapez 1 ou 2."}
        """,
}


def plan_with(tmp_path: Path, flows: str, numbers: str | None = None) -> Dialplan:
    files = {**BASE, "flows.yaml": flows, "numbers.yaml": numbers or """\
        numbers:
          - {number: "+33900000001", flow: main, language: en}
          - {number: "+33900000002", flow: main, language: fr}
        """}
    base = tmp_path / "dp"
    base.mkdir(exist_ok=True)
    for name, content in files.items():
        (base / name).write_text(textwrap.dedent(content), encoding="utf-8")
    return load_dialplan(base)


async def run(plan: Dialplan, call: FakeCall, called: str = "+33900000001", **kw: Any) -> FlowResult:
    route = plan.route(called)
    assert route is not None
    return await run_flow(plan, route, call, **kw)


MENU_FLOW = """\
    flows:
      main:
        - answer
        - name: menu
          menu:
            prompt: menu
            options: {1: one, 2: two}
            invalid: invalid
            no_input: silence
            attempts: 2
            on_failure: bye
        - name: one
          play: hello
        - goto: bye
        - name: two
          collect: {into: code, digits: 4, prompt: hello, invalid: invalid, no_input: silence, on_failure: bye}
        - play: ["digits:{code}"]
        - name: bye
          play: bye
        - hangup
    """


async def test_menu_key_routes_to_its_step_in_the_route_language(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, MENU_FLOW)
    call = FakeCall(digits=deque("1"))
    result = await run(plan, call, "+33900000002")
    assert call.log[:2] == ["play sound:callctl/fr/menu", "play sound:hello-world"]
    assert result == FlowResult("main", "8:hangup", "hangup", steps_run=6)
    assert call.hung_up == "normal" and call.answered


async def test_wrong_menu_key_then_silence_ends_on_failure_step(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, MENU_FLOW)
    call = FakeCall(digits=deque("9"))
    result = await run(plan, call)
    assert call.log == ["play sound:callctl/en/menu", "play sound:pbx-invalid", "play sound:callctl/en/menu",
                        "no key within 5 s", "play sound:vm-sorry", "play sound:vm-goodbye"]
    assert result.outcome == "hangup" and result.last_step == "8:hangup"


async def test_collect_with_wrong_input_then_timeout_gives_up(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, MENU_FLOW)
    call = FakeCall(digits=deque("212#"))  # menu 2, then "12#": too short
    result = await run(plan, call)
    assert "play sound:pbx-invalid" in call.log  # the short code
    assert call.log.count("play sound:vm-sorry") == 2  # then nothing pressed, twice
    assert call.log[-1] == "play sound:vm-goodbye"
    assert result.outcome == "hangup"


async def test_collect_reads_four_digits_and_the_terminator_and_plays_them_back(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, MENU_FLOW)
    call = FakeCall(digits=deque("21234#"))
    await run(plan, call)
    assert "play digits:1234" in call.log
    assert not call.digits  # the '#' was taken by the collect, not left to cut the next prompt


async def test_running_off_the_end_completes_and_hangs_up_normally(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "flows:\n  main:\n    - answer\n    - play: hello\n")
    call = FakeCall()
    result = await run(plan, call)
    assert result.outcome == "completed" and result.last_step == "2:play"
    assert call.hung_up == "normal"


async def test_hang_up_mid_prompt_propagates_call_hung_up(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, MENU_FLOW)
    call = FakeCall(hang_up_after_plays=0)
    with pytest.raises(CallHungUp):
        await run(plan, call)
    assert call.hung_up is None


async def test_a_step_raising_unexpectedly_ends_the_call_with_an_apology(tmp_path: Path) -> None:
    @registry.register_python_step("explode_test")
    async def explode(ctx: registry.FlowContext, args: Mapping[str, Any]) -> str | None:
        raise ZeroDivisionError("boom")

    try:
        plan = plan_with(tmp_path, "flows:\n  main:\n    - answer\n    - name: x\n      python: explode_test\n")
        call = FakeCall()
        result = await run(plan, call)
    finally:
        registry.unregister("explode_test")
    assert result.outcome == "error" and result.last_step == "x"
    assert result.error == "ZeroDivisionError: boom"
    assert call.log == ["play sound:something-terribly-wrong"]
    assert call.hung_up == "normal"


async def test_hang_up_inside_a_python_step_still_propagates(tmp_path: Path) -> None:
    @registry.register_python_step("hangs_up_test")
    async def gone(ctx: registry.FlowContext, args: Mapping[str, Any]) -> str | None:
        raise CallHungUp("caller left")

    try:
        plan = plan_with(tmp_path, "flows:\n  main:\n    - python: hangs_up_test\n")
        with pytest.raises(CallHungUp):
            await run(plan, FakeCall())
    finally:
        registry.unregister("hangs_up_test")


async def test_when_uses_the_country_time_zone_and_canvassing_window(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, """\
        flows:
          main:
            - when: {window: canvassing, else: closed}
            - play: hello
            - hangup
            - name: closed
              play: bye
        """)
    # 12:30 UTC is 13:30 in Paris in March: the lunch break of the canvassing window.
    lunch = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
    call = FakeCall()
    await run(plan, call, now=lambda: lunch)
    assert call.log == ["play sound:vm-goodbye"]
    call = FakeCall()
    await run(plan, call, now=lambda: lunch.replace(hour=9))  # 10:30 in Paris
    assert call.log == ["play sound:hello-world"]


async def test_dial_branches_on_its_outcome(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, """\
        flows:
          main:
            - dial: {user: alice, timeout: 15, busy: sorry}
            - hangup
            - name: sorry
              play: bye
        """)
    call = FakeCall(dial_status="busy")
    await run(plan, call)
    assert call.log == ["dial PJSIP/alice (15 s) -> busy", "play sound:vm-goodbye"]


async def test_a_call_keeps_the_dialplan_it_started_with(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "flows:\n  main:\n    - play: hello\n")
    plan_with(tmp_path, "flows:\n  main:\n    - play: bye\n")  # a reload rewrites the files
    call = FakeCall()
    await run(plan, call)
    assert call.log == ["play sound:hello-world"]


# -- the CLI handlers ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    parser = argparse.ArgumentParser(prog="callctl")
    cli.register(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(list(argv))


def test_simulate_prints_each_step_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("dialplan", "simulate", "--to", "+33900000002", "--dtmf", "2", "1234#", str(REPO / "dialplan"))
    assert args.func(args, Settings()) == 0
    out = capsys.readouterr().out
    assert "+33900000002 -> flow 'demo-menu'" in out
    assert "key '2' -> 'ask-code'" in out
    assert "code = '1234'" in out
    assert "played sound:callctl/en/you-entered digits:1234" in out
    assert out.strip().splitlines()[-1].startswith("outcome hangup")


def test_simulate_at_a_time_takes_the_closed_branch(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("dialplan", "simulate", "--to", "+33900000003", "--at", "2026-03-01T10:00", str(REPO / "dialplan"))
    assert args.func(args, Settings()) == 0
    assert "Sun 10:00 Europe/Paris is outside" in capsys.readouterr().out


def test_check_prints_a_summary_for_the_shipped_dialplan(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("dialplan", "check", str(REPO / "dialplan"))
    assert args.func(args, Settings()) == 0
    assert capsys.readouterr().out.startswith("dialplan ")


def test_check_of_a_broken_dialplan_raises_every_problem(tmp_path: Path) -> None:
    (tmp_path / "numbers.yaml").write_text('numbers:\n  - {number: "+33900000001", flow: nowhere}\n')
    args = parse("dialplan", "check", str(tmp_path))
    with pytest.raises(DialplanError) as info:
        args.func(args, Settings())
    assert any(p.startswith(f"{tmp_path.name}/numbers.yaml:2:") for p in info.value.problems)


def test_reload_without_a_daemon_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("dialplan", "reload", str(REPO / "dialplan"))
    assert args.func(args, Settings(runtime_dir=tmp_path)) == 1
    assert "no daemon running" in capsys.readouterr().err


def test_render_prompts_writes_8khz_mono_wavs(tmp_path: Path) -> None:
    import wave

    base = tmp_path / "dp"
    base.mkdir()
    (base / "all.yaml").write_text(textwrap.dedent("""\
        countries: {FR: {name: France, timezone: Europe/Paris, language: fr}}
        prompts: {hi: {fr: {text: "Bonjour"}}}
        flows: {main: [{play: hi}]}
        numbers: [{number: "+33900000001", flow: main}]
        """))
    args = parse("dialplan", "render-prompts", str(base), "--out", str(tmp_path / "sounds"))
    assert args.func(args, Settings()) == 0
    with wave.open(str(tmp_path / "sounds" / "callctl" / "fr" / "hi.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() > 1000
