"""Operator dialplans driving real calls: menus, digit collection, reload under live calls."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.integration.test_daemon import MENU, WELCOME, cdr_rows, wait_for_cdrs
from tests.support import sipp
from tests.support.asterisk import render_prompts

pytestmark = pytest.mark.integration


def steps_taken(d: Any) -> list[str]:
    return [e["step"] for e in d.events("flow_step")]


def step_notes(d: Any, step: str) -> list[str]:
    return [note for e in d.events("flow_step", step=step) for note in e.get("notes", [])]


def test_menu_then_collect_reads_the_digits_back(daemon_factory: Any, asterisk: AsteriskInstance) -> None:
    d = daemon_factory(log_level="debug")
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, MENU, [("pause", 1500), ("dtmf", "2"), ("pause", 1500), ("dtmf", "1234#"),
                                                 ("wait_bye", None)])
    assert result.ok, result.stderr
    d.wait_for_log("call_finished")
    notes = " ".join(" ".join(e.get("notes", [])) for e in d.events("flow_step"))
    assert "digits:1234" in notes, notes
    # dialplan/flows/demo.yaml, demo-menu: key 2 leads to ask-code, which reads the code back.
    assert steps_taken(d) == ["1:answer", "main", "ask-code", "6:play", "bye", "8:hangup"]


def test_collect_with_wrong_input_then_timeout_ends_on_the_failure_branch(daemon_factory: Any,
                                                                         asterisk: AsteriskInstance,
                                                                         tmp_path: Path) -> None:
    # The demo menu with a 3 s wait for the code instead of 10 s: two waits run out in this test.
    plan_dir = _dialplan_copy(tmp_path)
    demo = plan_dir / "flows" / "demo.yaml"
    text = demo.read_text()
    assert text.count("        timeout: 10\n") == 1
    demo.write_text(text.replace("        timeout: 10\n", "        timeout: 3\n"))
    d = daemon_factory(log_level="debug", dialplan_dir=str(plan_dir))
    d.wait_until_ready()
    # "12#" is too short for a 4-digit code, then nothing: invalid, then no-input, then no-input.
    result = sipp.call(asterisk.sip_port, MENU, [("pause", 1500), ("dtmf", "2"), ("pause", 1500), ("dtmf", "12#"),
                                                 ("wait_bye", None)], bye_timeout_s=60)
    assert result.ok, result.stderr
    finished = d.wait_for_log("call_finished")
    assert finished["outcome"] == "hangup"
    notes = " ".join(" ".join(e.get("notes", [])) for e in d.events("flow_step"))
    assert "digits:" not in notes  # the code was never read back
    # The collect step's on_failure branch: "bye" (goodbye), then the flow's hangup step; not the read-back.
    assert steps_taken(d) == ["1:answer", "main", "ask-code", "bye", "8:hangup"]
    attempts = [n for n in step_notes(d, "ask-code") if n.startswith("attempt") or "attempts failed" in n]
    assert attempts == ["attempt 1: '12#' refused (fewer than 4 digits)", "attempt 2: no digit within 3 s",
                        "attempt 3: no digit within 3 s", "3 attempts failed -> 'bye'"], attempts


def _dialplan_copy(tmp_path: Path) -> Path:
    target = tmp_path / "dialplan"
    shutil.copytree(REPO / "dialplan", target)
    return target


def test_reload_under_a_live_call_keeps_its_version_and_new_calls_take_the_new_one(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    plan_dir = _dialplan_copy(tmp_path)
    d = daemon_factory(dialplan_dir=str(plan_dir))
    d.wait_until_ready()
    old_version = d.wait_for_log("callctl_starting")["dialplan"].split()[1].rstrip(":")
    # A call that stays in the menu while the operator changes the dialplan.
    live = sipp.start_call(asterisk.sip_port, MENU, [("pause", 6000), ("bye", None)])
    d.wait_for_log("call_started")
    demo = plan_dir / "flows" / "demo.yaml"
    demo.write_text(demo.read_text().replace("- play: welcome", "- play: [welcome, goodbye]"))
    # The operator's command: signals the daemon through its pid file.
    env = dict(d.env)
    res = subprocess.run([sys.executable, "-m", "callctl", "dialplan", "reload"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    reloaded = d.wait_for_log("dialplan_reloaded")
    assert reloaded["previous"] == old_version and reloaded["version"] != old_version
    assert sipp.finish(*live).ok
    assert sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)]).ok
    wait_for_cdrs(database_url, 2)
    assert d.stop() == 0  # the writer has flushed: nothing more can arrive
    rows = cdr_rows(database_url)
    assert sorted((r["to_number"], r["dialplan_version"]) for r in rows) == sorted(
        [(MENU, old_version), (WELCOME, reloaded["version"])])


def test_an_invalid_dialplan_on_reload_is_refused_and_the_current_one_kept(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    plan_dir = _dialplan_copy(tmp_path)
    d = daemon_factory(dialplan_dir=str(plan_dir))
    d.wait_until_ready()
    version = d.wait_for_log("callctl_starting")["dialplan"].split()[1].rstrip(":")
    (plan_dir / "flows" / "broken.yaml").write_text("flows:\n  broken:\n    - goto: nowhere\n")
    d.signal(signal.SIGHUP)
    refused = d.wait_for_log("dialplan_reload_refused")
    assert refused["kept"] == version
    problems = [e["problem"] for e in d.events("dialplan_reload_problem")]
    assert any(p.startswith("dialplan/flows/broken.yaml:3:13:") and "nowhere" in p for p in problems), problems
    assert sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)]).ok
    [row] = wait_for_cdrs(database_url, 1)
    assert row["dialplan_version"] == version
    assert d.proc is not None and d.proc.poll() is None


def test_the_daemon_refuses_to_start_on_an_invalid_dialplan(tmp_path: Path) -> None:
    plan_dir = _dialplan_copy(tmp_path)
    (plan_dir / "numbers.yaml").write_text("numbers:\n  - number: '+33900000001'\n    flow: missing\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DIALPLAN_DIR"] = str(plan_dir)
    res = subprocess.run([sys.executable, "-m", "callctl", "run"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1
    assert "numbers.yaml:3:" in res.stderr and "missing" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_text_prompts_are_rendered_as_8khz_audio_asterisk_can_play(asterisk: AsteriskInstance) -> None:
    render_prompts(asterisk)
    wav = asterisk.sounds_dir / "callctl" / "fr" / "conf-over.wav"
    info = subprocess.run(["soxi", str(wav)], capture_output=True, text=True, check=True).stdout
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info
    assert asterisk.rx("core show file formats").count("wav") >= 1

