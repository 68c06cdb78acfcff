"""The dialplan language of issue 23: holidays and closure calendars, day/night switches, branching
on values, checked dial targets, errors that teach, simulate with one --dtmf group per attempt."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from callctl.flows.engine import run_flow
from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan
from callctl.flows.simulate import FakeCall, simulate
from callctl.flows.switches import FixedSwitches, SwitchState
from tests.unit.test_flows_loader import one, problems

PARIS = dt.timezone(dt.timedelta(hours=2))  # CEST

HOURS_FLOW = """\
    calendars:
      office-closed:
        dates: ["2026-12-24..2026-12-26", "08-14"]
    switches:
      support-closed: {default: off}
    flows:
      main:
        - answer
        - when: {switch: support-closed, then: closed}
        - when:
            days: mon-fri
            hours: ["09:00-18:00"]
            closed_on: [holidays, office-closed]
            else: closed
        - play: hello
        - hangup
        - name: closed
          play: bye
        - hangup:
    """


def plan(tmp_path: Path, extra: dict[str, str] | None = None) -> Dialplan:
    from tests.unit.test_flows_loader import write

    return load_dialplan(write(tmp_path, {"flows/main.yaml": HOURS_FLOW, **(extra or {})}))


async def walk(plan: Dialplan, at: dt.datetime, **kw: object) -> list[str]:
    route = plan.route("+33900000001")
    assert route is not None
    lines: list[str] = []
    await run_flow(plan, route, FakeCall(), now=lambda: at, trace=lambda f, s, why: lines.append(f"{s}: {why}"),
                   **kw)  # type: ignore[arg-type]
    return lines


# -- holidays, dates, calendars -------------------------------------------------------------------


async def test_a_public_holiday_closes_an_open_hour(tmp_path: Path) -> None:
    lines = await walk(plan(tmp_path), dt.datetime(2026, 5, 1, 10, 30, tzinfo=PARIS))  # Friday, 1 May
    text = "\n".join(lines)
    assert "2026-05-01 is closed: Labor Day (public holiday FR)" in text, text
    assert "-> 'closed'" in text


async def test_an_ordinary_weekday_is_open(tmp_path: Path) -> None:
    lines = await walk(plan(tmp_path), dt.datetime(2026, 5, 4, 10, 30, tzinfo=PARIS))
    assert not any("-> 'closed'" in line for line in lines), lines


async def test_explicit_dates_and_yearly_dates_close_the_line(tmp_path: Path) -> None:
    p = plan(tmp_path)
    christmas_eve = "\n".join(await walk(p, dt.datetime(2026, 12, 24, 10, 0, tzinfo=PARIS)))
    assert "2026-12-24..2026-12-26 (office-closed)" in christmas_eve
    yearly = "\n".join(await walk(p, dt.datetime(2028, 8, 14, 10, 0, tzinfo=PARIS)))  # a Monday
    assert "08-14 (office-closed)" in yearly


async def test_when_a_calendar_goes_then_on_a_listed_day(tmp_path: Path) -> None:
    p = plan(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - when: {calendar: holidays, dates: "2026-06-02", then: closed}
            - play: hello
            - hangup
            - name: closed
              play: bye
        """})
    assert any("-> 'closed'" in line for line in await walk(p, dt.datetime(2026, 6, 2, 10, 0, tzinfo=PARIS)))
    assert any("-> 'closed'" in line for line in await walk(p, dt.datetime(2026, 7, 14, 10, 0, tzinfo=PARIS)))
    assert not any("-> 'closed'" in line for line in await walk(p, dt.datetime(2026, 7, 15, 10, 0, tzinfo=PARIS)))


def test_calendar_mistakes_are_pointed_at(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        calendars:
          office-closed: {dates: ["2026-12-32", "12-24..2026-12-26"], holidays: XX}
          holidays: {dates: "01-01"}
        flows:
          main:
            - when: {closed_on: [holiday, office-closd], else: bye}
            - name: bye
              hangup:
        """})
    assert one(found, "date '2026-12-32' is not valid").startswith("dialplan/flows/main.yaml:2:27:")
    one(found, "date '12-24..2026-12-26' is not valid")
    one(found, "no public holidays known for 'XX'")
    one(found, "'holidays' is the built-in calendar")
    one(found, "unknown calendar 'holiday' (did you mean 'holidays'?)")
    one(found, "unknown calendar 'office-closd' (did you mean 'office-closed'?)")


# -- day/night switch -------------------------------------------------------------------------------


async def test_a_switch_turned_on_closes_the_line_and_says_who(tmp_path: Path) -> None:
    p = plan(tmp_path)
    at = dt.datetime(2026, 5, 4, 10, 30, tzinfo=PARIS)
    state = SwitchState("support-closed", True, "alice", dt.datetime(2026, 5, 4, 7, 0, tzinfo=dt.UTC))
    text = "\n".join(await walk(p, at, switch_reader=FixedSwitches({"support-closed": state})))
    assert "switch 'support-closed' is on (switched by alice at 2026-05-04 07:00 UTC)" in text, text
    assert "-> 'closed'" in text


async def test_a_switch_never_switched_or_unreadable_has_its_default(tmp_path: Path) -> None:
    class Broken:
        async def states(self) -> dict[str, SwitchState]:
            raise OSError("connection refused")

    p = plan(tmp_path)
    at = dt.datetime(2026, 5, 4, 10, 30, tzinfo=PARIS)
    text = "\n".join(await walk(p, at, switch_reader=FixedSwitches({})))
    assert "switch 'support-closed' is off (its default; never switched)" in text
    text = "\n".join(await walk(p, at, switch_reader=Broken()))
    assert "off (its default; the switch store did not answer: OSError: connection refused)" in text


def test_an_undeclared_switch_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        switches:
          night: {default: maybe}
        flows:
          main:
            - when: {switch: nigth, then: bye}
            - name: bye
              hangup:
        """})
    one(found, "default must be true or false")
    one(found, "unknown switch 'nigth' (did you mean 'night'?)")


async def test_simulate_shows_the_switch_state_it_used(tmp_path: Path) -> None:
    p = plan(tmp_path)
    result = await simulate(p, "+33900000001", at=dt.datetime(2026, 5, 4, 10, 30), switches={"support-closed": True})
    text = "\n".join(result.lines)
    assert "switch 'support-closed' is on (set by simulate --switch)" in text, text


def _dedent(text: str) -> str:
    return textwrap.dedent(text)


@pytest.fixture(autouse=True)
def _no_bound_switches() -> None:
    from callctl.flows import switches

    switches.bind(None)


# -- simulate: one --dtmf group per attempt ----------------------------------------------------------

RETRY_FLOW = """\
    flows:
      main:
        - answer
        - name: menu
          menu: {prompt: hello, options: {1: one, 2: two}, attempts: 3}
        - name: one
          play: hello
        - hangup
        - name: two
          collect: {into: order, digits: 6, prompt: hello, attempts: 2}
        - play: ["digits:{order}"]
        - hangup
    """


async def test_after_a_wrong_key_the_next_group_is_the_next_attempt(tmp_path: Path) -> None:
    p = plan(tmp_path, {"flows/main.yaml": RETRY_FLOW})
    result = await simulate(p, "+33900000001", dtmf=["95", "2", "12", "123456#", "77"])
    text = "\n".join(result.lines)
    assert "attempt 1: key '9' is not an option" in text, text
    assert "key '2' -> 'two'" in text, text
    assert "attempt 1: '12' refused" in text or "attempt 1: '12'" in text, text
    assert "order = '123456'" in text, text
    assert result.lines[-1] == "keys never read: 5 (dropped after a wrong key), 77 (nothing asked for them)", text


def test_simulate_cli_gives_each_dtmf_word_its_own_attempt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from callctl.config import Settings
    from tests.unit.test_flows_engine import parse
    from tests.unit.test_flows_loader import write

    base = write(tmp_path, {"flows/main.yaml": RETRY_FLOW})
    args = parse("dialplan", "simulate", "--to", "+33900000001", "--dtmf", "9", "1", str(base))
    assert args.func(args, Settings()) == 0
    out = capsys.readouterr().out
    assert "key '1' -> 'one'" in out and "keys never read" not in out, out


# -- branching on values ----------------------------------------------------------------------------

BRANCH_FLOW = """\
    flows:
      main:
        - answer
        - name: by-country
          branch: {value: "{caller_country}", equals: {BE: belgian}, else: ask}
        - name: belgian
          play: hello
        - name: ask
          collect: {into: order, digits: 6, prompt: hello, attempts: 1, on_failure: again}
        - branch:
            value: "{order}"
            equals: {"000000": test-order}
            prefix: {"9": big, "99": vip}
            else: bye
        - name: again
          branch: {value: "{visits}", at_least: {3: bye}, else: ask}
        - name: test-order
          play: hello
        - goto: bye
        - name: big
          play: hello
        - goto: bye
        - name: vip
          play: bye
        - name: bye
          hangup:
    """


async def _branch_lines(tmp_path: Path, caller: str, dtmf: list[str]) -> str:
    p = plan(tmp_path, {"flows/main.yaml": BRANCH_FLOW})
    return "\n".join((await simulate(p, "+33900000001", caller=caller, dtmf=dtmf)).lines)


async def test_branch_on_collected_digits_takes_the_longest_prefix(tmp_path: Path) -> None:
    text = await _branch_lines(tmp_path, "+33612345678", ["991234"])
    assert "'991234' starts with '99' -> 'vip'" in text, text
    assert "'' matches no case -> 'ask'" in text or "'FR' matches no case -> 'ask'" in text, text


async def test_branch_on_the_caller_country(tmp_path: Path) -> None:
    text = await _branch_lines(tmp_path, "+3221234567", [])
    assert "'BE' equals 'BE' -> 'belgian'" in text, text


async def test_branch_on_the_number_of_visits_ends_a_retry_loop(tmp_path: Path) -> None:
    text = await _branch_lines(tmp_path, "+33612345678", [])
    assert "1 is at least" not in text and "3 is at least 3 -> 'bye'" in text, text
    assert text.count("'2' matches no case -> 'ask'") == 1, text


def test_branch_mistakes_are_pointed_at(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - branch: {value: "{nope}", at_least: {three: bye}, equals: {"1": by}}
            - branch: {value: "x"}
            - name: bye
              hangup:
        """})
    one(found, "unknown variable '{nope}'")
    one(found, "branch at_least 'three' must be a whole number")
    one(found, "unknown step 'by' (did you mean 'bye'?)")
    one(found, "'branch' needs cases")


# -- checked dial targets ----------------------------------------------------------------------------

DIALS = """\
    flows:
      main:
        - dial: {trunk: pstn, number: "0123456789"}
        - dial: {trunk: pstn, number: "+33 1 23 45 67 89"}
        - dial: {trunk: pstm, number: "+33123456789"}
        - dial: {trunk: pstn, number: "0{code}"}
        - dial: {trunk: pstn, number: "+44{caller}"}
        - dial: {to: "PJSIP/0612345678@pstm"}
        - dial: {to: "PJSIP/front-desk"}
    """


def test_dial_targets_are_checked_against_e164_and_the_pjsip_trunks(tmp_path: Path) -> None:
    from callctl.errors import DialplanError
    from callctl.flows.pjsip import endpoints_in
    from callctl.flows.validate import Endpoints
    from tests.unit.test_flows_loader import REPO, write

    conf = REPO / "asterisk-conf" / "pjsip.conf"
    endpoints = Endpoints(endpoints_in(conf), str(conf))
    assert "pstn" in endpoints.names and "caller-defaults" not in endpoints.names
    with pytest.raises(DialplanError) as info:
        load_dialplan(write(tmp_path, {"flows/main.yaml": DIALS}), endpoints=endpoints)
    found = info.value.problems
    assert one(found, "dial number '0123456789' is a national number: write it in E.164, \"+33123456789\" "
                      "if it is in FR").startswith("dialplan/flows/main.yaml:3:35:")
    one(found, "dial number '+33 1 23 45 67 89' is not E.164 (no spaces or punctuation): write \"+33123456789\"")
    one(found, f"trunk 'pstm' is not a PJSIP endpoint in {conf} (did you mean 'pstn'?)")
    one(found, "number '0{code}' must be E.164")
    assert not any("+44{caller}" in p or "front-desk" in p for p in found)
    one(found, "dial number '0612345678' is a national number: write it in E.164, \"+33612345678\"")
    assert len([p for p in found if "trunk 'pstm'" in p]) == 2, found


def test_a_national_number_in_numbers_yaml_gets_its_e164_form(tmp_path: Path) -> None:
    found = problems(tmp_path, {"numbers.yaml": 'numbers:\n  - {number: "0900000001", flow: main}\n'})
    assert found == ["dialplan/numbers.yaml:2:14: number '0900000001' is a national number: write it in E.164, "
                     "\"+33900000001\" if it is in FR (+, the country code, then the number without its leading "
                     "0)"], found


def test_check_says_when_trunks_were_not_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from callctl.config import Settings
    from tests.unit.test_flows_engine import parse
    from tests.unit.test_flows_loader import REPO

    args = parse("dialplan", "check", str(REPO / "dialplan"))
    assert args.func(args, Settings(pjsip_conf=tmp_path / "none.conf")) == 0
    assert "trunks not checked: no" in capsys.readouterr().out
    assert args.func(args, Settings(pjsip_conf=REPO / "asterisk-conf" / "pjsip.conf")) == 0
    assert "trunks not checked" not in capsys.readouterr().out


# -- errors that teach --------------------------------------------------------------------------------


def test_an_indentation_mistake_says_the_fix_and_causes_no_knock_on_errors(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - name: menu
              menu:
                prompt: hello
                options:
                  1: bye
                 2: bye
            - name: bye
              hangup:
        """})
    assert len(found) == 1, found  # not "numbers.yaml: number routes to unknown flow 'main'"
    assert found[0].startswith("dialplan/flows/main.yaml:8:10: invalid YAML: this line is indented differently "
                               "from the lines above it"), found


def test_a_bare_step_type_after_name_says_to_add_the_colon(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - answer
            - name: bye
              hangup
          other:
            - answer
        """})
    assert found == ["dialplan/flows/main.yaml:5:7: invalid YAML: 'hangup' needs a colon here: write 'hangup:' (in "
                     "a step with a name, the step's type is a key like 'name:') (what this file defines is not "
                     "checked against the other files until it reads)"], found


def test_under_indented_options_say_where_they_belong(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - menu:
              prompt: hello
              options: {1: bye}
            - name: bye
              hangup:
        """})
    assert one(found, "'prompt, options' must be indented under 'menu:'").startswith(
        "dialplan/flows/main.yaml:4:7:"), found
    assert not any("two types" in p for p in found)


def test_the_shipped_reception_line_is_closed_on_may_day_and_takes_a_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    from callctl.config import Settings
    from tests.unit.test_flows_engine import parse
    from tests.unit.test_flows_loader import REPO

    args = parse("dialplan", "simulate", "--to", "+33900000003", "--at", "2026-05-01T10:30",
                 "--switch", "reception-closed=off", str(REPO / "dialplan"))
    assert args.func(args, Settings()) == 0
    out = capsys.readouterr().out
    assert "2026-05-01 is closed: Labor Day (public holiday FR)" in out, out
    assert "would record a message for box 'reception'" in out, out


def test_the_daemon_checks_dial_trunks_at_start_and_at_each_reload(tmp_path: Path) -> None:
    """The running daemon refuses what `dialplan check` refuses: a dial step through a trunk Asterisk
    does not have; pjsip.conf is read again at each reload, so a trunk and the flow using it go together."""
    from structlog.testing import capture_logs

    from callctl.dialplans import DialplanHolder
    from callctl.errors import DialplanError
    from tests.unit.test_flows_loader import write

    flow = '    flows:\n      main:\n        - dial: {trunk: carrier2, number: "+33123456789"}\n'
    directory = write(tmp_path, {})
    conf = tmp_path / "pjsip.conf"
    conf.write_text("[pstn]\ntype = endpoint\n")
    holder = DialplanHolder(directory, conf)
    (directory / "flows" / "main.yaml").write_text(textwrap.dedent(flow))
    with capture_logs() as logs:
        assert holder.reload() is False
    assert any("trunk 'carrier2' is not a PJSIP endpoint in" in str(e.get("problem")) for e in logs), logs
    conf.write_text("[pstn]\ntype = endpoint\n[carrier2]\ntype = endpoint\n")
    assert holder.reload() is True
    conf.write_text("[pstn]\ntype = endpoint\n")
    with pytest.raises(DialplanError):
        DialplanHolder(directory, conf)  # at start: refused, the daemon does not start on it
    assert DialplanHolder(directory, tmp_path / "absent.conf").current  # no pjsip.conf here: not checked
