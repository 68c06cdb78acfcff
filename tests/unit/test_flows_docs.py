"""docs/dialplan.md's worked examples are real: each block marked ``<!-- example: NAME -->`` is
loaded with the shipped country table (and the sample's PJSIP trunks), and simulated."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from callctl.flows.loader import load_dialplan
from callctl.flows.model import Dialplan
from callctl.flows.pjsip import endpoints_in
from callctl.flows.simulate import simulate
from callctl.flows.validate import Endpoints
from callctl.voicemail import steps as voicemail_steps

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "dialplan.md"
EXAMPLE = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```yaml\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text(encoding="utf-8")))


def load_example(tmp_path: Path, name: str) -> Dialplan:
    base = tmp_path / "dialplan"
    base.mkdir()
    shutil.copy(REPO / "dialplan" / "countries.yaml", base / "countries.yaml")
    (base / f"{name}.yaml").write_text(examples()[name], encoding="utf-8")
    conf = REPO / "asterisk-conf" / "pjsip.conf"
    return load_dialplan(base, endpoints=Endpoints(endpoints_in(conf), str(conf)))


def test_the_docs_have_an_example_of_each_new_construct() -> None:
    assert {"support-hours", "switch", "branch", "voicemail"} <= set(examples())


@pytest.mark.parametrize("name", sorted(examples()))
def test_each_docs_example_passes_check(tmp_path: Path, name: str) -> None:
    load_example(tmp_path, name)


async def test_the_support_line_example_is_closed_on_may_day(tmp_path: Path) -> None:
    plan = load_example(tmp_path, "support-hours")
    result = await simulate(plan, "+33900000101", at=dt.datetime(2026, 5, 1, 10, 30))
    assert any("Labor Day (public holiday FR)" in line and "-> 'closed'" in line for line in result.lines)
    open_day = await simulate(plan, "+33900000101", at=dt.datetime(2026, 5, 4, 10, 30), dtmf="2 123456#")
    assert any("digits:123456" in line for line in open_day.lines), open_day.lines


async def test_the_switch_example_closes_when_switched_on(tmp_path: Path) -> None:
    plan = load_example(tmp_path, "switch")
    result = await simulate(plan, "+33900000102", switches={"hotline-closed": True})
    assert any("-> 'closed'" in line for line in result.lines), result.lines


async def test_the_branch_example_routes_belgian_callers(tmp_path: Path) -> None:
    plan = load_example(tmp_path, "branch")
    result = await simulate(plan, "+33900000103", caller="+3225551234")
    assert any("'BE' equals 'BE' -> 'belgium'" in line for line in result.lines), result.lines


async def test_the_voicemail_example_takes_a_message_out_of_hours(tmp_path: Path) -> None:
    assert voicemail_steps.DEFAULT_GREETING  # the step type is registered by importing it
    plan = load_example(tmp_path, "voicemail")
    result = await simulate(plan, "+33900000104", at=dt.datetime(2026, 5, 1, 10, 30))
    text = "\n".join(result.lines)
    assert "would record a message for box 'support' (up to 180 s, ends after 5 s of silence" in text, text
    assert "'left' equals 'left' -> 'thanks'" in text, text
