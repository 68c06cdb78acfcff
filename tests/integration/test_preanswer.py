"""Numbers whose flow starts with "answer" are answered by Asterisk before Stasis() (wt-preanswer, issue 17):
real Asterisk, SIPp and PostgreSQL. docs/architecture.md "Answered by Asterisk"."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_cli import db
from tests.support import sipp
from tests.support.asterisk import Daemon, engine_env, render_prompts, wait_for
from tests.support.preanswer import RequestLog, node_factory  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

WELCOME = "+33900000001"  # answer, hello-world, hang up
WELCOME_KEY = "33900000001"


def start_engine(inst: AsteriskInstance, database_url: str, workdir: Path, **overrides: str) -> Daemon:
    workdir.mkdir(parents=True, exist_ok=True)
    env = engine_env(inst, database_url, workdir, ami_address=f"127.0.0.1:{inst.ami_port}",
                     ami_user=inst.ami_user, ami_password=inst.ami_password, **overrides)
    d = Daemon(env, workdir).start()
    d.wait_until_ready()
    return d


def stopped(d: Daemon) -> None:
    d.stop()
    d.close_pipes()
    print(f"--- daemon log ({len(d.raw)} lines, last 60) ---", *d.raw[-60:], *d.stderr[-20:], sep="\n")


def globals_of(inst: AsteriskInstance) -> dict[str, str]:
    out = inst.rx("dialplan show globals")
    found = {}
    for line in out.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep:
            found[name.strip()] = value.strip()
    return found


def preanswering(inst: AsteriskInstance, key: str) -> bool:
    """What Asterisk's globals say of ``key`` (extensions.conf [callctl-preanswer])."""
    g = globals_of(inst)
    token, *numbers = g.get(f"CALLCTL_PA_{key[-2:]}", "").split("-")
    return bool(g.get("CALLCTL_PREANSWER")) and token == g["CALLCTL_PREANSWER"] and key in numbers


def cel_answer(database_url: str, channel_id: str) -> dt.datetime:
    rows = db(database_url, "SELECT eventtime FROM cel WHERE uniqueid = $1 AND eventtype = 'ANSWER'", channel_id)
    assert len(rows) == 1, rows
    at: dt.datetime = rows[0]["eventtime"]
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)  # cel_pgsql: Asterisk's UTC wall clock


def test_a_preanswered_call_costs_one_rest_request_less_and_is_billed_from_asterisks_answer(
        node_factory: Any, database_url: str, tmp_path: Path) -> None:  # noqa: F811
    inst = node_factory()
    render_prompts(inst)
    counts: dict[str, int] = {}
    for mode in ("off", "on"):
        d = start_engine(inst, database_url, tmp_path / mode, preanswer=mode)
        try:
            if mode == "on":
                d.wait_for_log("preanswer_published")
                assert preanswering(inst, WELCOME_KEY)
            requests = RequestLog(inst)
            result = sipp.call(inst.sip_port, WELCOME, [("wait_bye", None)])
            assert result.ok, result.stderr
            finished = d.wait_for_log("call_finished")
            assert finished["outcome"] == "completed"
            [row] = [r for r in wait_for_cdrs(database_url, len(counts) + 1) if r["channel_id"] not in counts]
        finally:
            stopped(d)
        channel = row["channel_id"]
        mine = requests.about(channel)
        counts[channel] = len(mine)
        answers = [r for r in mine if f"channels/{channel}/answer" in r]
        assert len(answers) == (1 if mode == "off" else 0), mine
        if mode == "on":
            # The CDR's answer is Asterisk's: stamped by the dialplan right after Answer(), on Asterisk's clock,
            # the same moment as CEL's ANSWER give or take the dialplan's next step (the CDR keeps milliseconds).
            late_s = (row["answered_at"] - cel_answer(database_url, channel)).total_seconds()
            assert -0.001 <= late_s < 0.010, late_s
    off, on = counts.values()
    assert on == off - 1, counts


def answer_requests(requests: RequestLog, d: Daemon, calls_before: int) -> list[str]:
    """The answer requests of the call that started after ``calls_before`` others (it has finished)."""
    wait_for(lambda: len(d.events("call_finished")) > calls_before, 20, "the call to finish")
    channel = d.events("call_started")[calls_before]["channel"]
    return [r for r in requests.about(channel) if f"channels/{channel}/answer" in r]


def test_only_numbers_whose_flow_starts_with_answer_are_preanswered_and_a_reload_changes_it(
        daemon_factory: Any, asterisk: AsteriskInstance, tmp_path: Path) -> None:
    plan = tmp_path / "dialplan"
    shutil.copytree(REPO / "dialplan", plan)
    d = daemon_factory(dialplan_dir=str(plan))
    d.wait_for_log("preanswer_published")
    assert preanswering(asterisk, WELCOME_KEY)
    assert not preanswering(asterisk, "33900000004")  # pstn-demo starts with a dial: left to the engine
    requests = RequestLog(asterisk)
    try:
        result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
        assert result.ok, result.stderr
        assert answer_requests(requests, d, 0) == []  # Asterisk answered it: no answer request

        # The welcome flow now does something before it answers: Asterisk leaves its calls to the engine.
        flows = plan / "flows" / "demo.yaml"
        text = flows.read_text()
        assert "  welcome:\n    - answer\n" in text
        flows.write_text(text.replace("  welcome:\n    - answer\n",
                                      "  welcome:\n    - set:\n        greeted: \"yes\"\n    - answer\n"))
        d.signal(signal.SIGHUP)
        d.wait_for_log("preanswer_updated", removed=1)
        assert not preanswering(asterisk, WELCOME_KEY)
        result = sipp.call(asterisk.sip_port, WELCOME, [("wait_bye", None)])
        assert result.ok, result.stderr
        assert len(answer_requests(requests, d, 1)) == 1  # the engine answered it
    finally:
        requests.close()


def test_a_cluster_node_whose_engine_was_killed_refuses_a_new_call_with_503_despite_the_published_set(
        node_factory: Any, database_url: str, tmp_path: Path) -> None:  # noqa: F811
    inst = node_factory(refuse=True)  # CALLCTL_ENGINE_DOWN = refuse, as on every cluster node
    render_prompts(inst)
    d = start_engine(inst, database_url, tmp_path / "engine")
    try:
        d.wait_for_log("preanswer_published")
        d.wait_for_log("ami_connected")  # logged in: a session Asterisk counts
        requests = RequestLog(inst)
        result = sipp.call(inst.sip_port, WELCOME, [("wait_bye", None)])
        assert result.ok, result.stderr
        assert answer_requests(requests, d, 0) == []  # the node pre-answers while its engine lives

        d.signal(signal.SIGKILL)
        d.wait_exit(10)
        assert preanswering(inst, WELCOME_KEY)  # the dead engine's set is still in Asterisk's globals
        # ... yet the node refuses before answering: the engine's AMI session went with it.
        refused = sipp.call(inst.sip_port, WELCOME, [], expect=503)
        assert refused.ok, refused.stderr
    finally:
        stopped(d)
