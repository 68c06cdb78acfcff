"""Issue 21 on real calls: the trace of a SIPp call through a menu and a collect is stored with its CDR
(keys as sent, the code masked), `callctl call show` prints it with the legs and their price,
`callctl calls` (and `--watch` in tmux) shows the call while it runs, `dialplan graph --calls` counts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

MENU = "+33900000002"  # demo-menu: 2 -> collect a 4-digit code ending with #, read back, goodbye


def cli(d: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update({k: v for k, v in d.env.items() if k.startswith("CALLCTL_")})
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_calls_trace_is_stored_shown_watched_and_counted(daemon_factory: Any, asterisk: AsteriskInstance,
                                                           tmp_path: Path) -> None:
    d = daemon_factory()
    d.wait_until_ready()
    proc, work = sipp.start_call(asterisk.sip_port, MENU, [("pause", 2500), ("dtmf", "2"), ("pause", 2000),
                                                           ("dtmf", "1234#"), ("wait_bye", None)])
    tmux = f"callctl-calls-{uuid.uuid4().hex[:8]}"
    env_line = " ".join(f"{k}={v}" for k, v in d.env.items() if k.startswith("CALLCTL_"))
    subprocess.run(["tmux", "new-session", "-d", "-s", tmux, "-x", "160", "-y", "20",
                    f"env {env_line} {sys.executable} -m callctl calls --watch --interval 0.3"], check=True,
                   cwd=REPO)
    try:
        # While the call runs: `calls --json` names its flow and the step it waits in, the caller masked.
        def running() -> dict[str, Any] | None:
            res = cli(d, "calls", "--json")
            calls = json.loads(res.stdout)["calls"] if res.returncode == 0 else []
            return next((c for c in calls if c["flow"] == "demo-menu" and c["step"]), None)

        row = wait_for(running, 20, "the call in `callctl calls --json`", interval_s=0.2)
        assert row["called"].endswith("900000002") and row["caller"].endswith("5678")
        assert "3361234" not in row["caller"]  # masked as in the logs
        assert row["state"] == "answered" and row["step"] in ("main", "ask-code", "1:answer")

        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", tmux], capture_output=True, text=True,
                                  check=False).stdout

        def call_on_screen() -> str:
            text = screen()
            return text if "demo-menu" in text and "1 call(s) in progress" in text else ""

        shown = wait_for(call_on_screen, 20, "the call on the `calls --watch` screen", interval_s=0.2)
        assert "*******5678" in shown and "CALL_ID" in shown
        result = sipp.finish(proc, work)
        assert result.ok, result.stderr
        wait_for(lambda: "0 call(s) in progress" in screen(), 20, "the watch screen emptied", interval_s=0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", tmux], check=False, capture_output=True)

    call_id = d.wait_for_log("call_finished")["call_id"]
    d.stop()  # the writer drains: the CDR is in PostgreSQL

    shown = cli(d, "call", "show", call_id, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    first = next(c for c in view["cdrs"] if c["leg_id"] == call_id)
    trace = first["extra"]["trace"]
    assert [(t["step"], t["result"]) for t in trace] == [
        ("1:answer", "next"), ("main", "ask-code"), ("ask-code", "next"), ("6:play", "next"), ("bye", "next"),
        ("8:hangup", "hang up (normal)")]
    assert trace[1]["keys"] == "2" and trace[2]["keys"] == "*****"  # the menu key as sent; the code masked
    assert "1234" not in json.dumps(trace)  # (the caller's own number, +33612345678, does hold it)
    assert all(t["ms"] >= 0 for t in trace) and trace[2]["ms"] >= 1000  # the caller took time to key
    text = cli(d, "call", "show", call_id)
    assert text.returncode == 0 and "steps:" in text.stdout and "[demo-menu] main (menu) -> ask-code" in text.stdout
    steps_part = text.stdout.split("steps:")[1].split("legs:")[0]
    assert "price:" in text.stdout and "1234" not in steps_part and "keys *****" in steps_part

    dot = tmp_path / "plan.dot"
    graph = cli(d, "dialplan", "graph", str(REPO / "dialplan"), "--flow", "demo-menu", "--calls", "1h", "-o", str(dot))
    assert graph.returncode == 0, graph.stderr
    assert "key 2 (1 calls)" in dot.read_text() and "key 1 (0 calls)" in dot.read_text()

    missing = cli(d, "call", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no CDR with call_id" in missing.stderr and missing.stdout == ""


def test_a_conference_calls_trace_names_its_steps_and_never_holds_the_code(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    from tests.integration.test_conference import book, caller

    conf = book(database_url, tmp_path, participants=1)
    code = conf["organizer"]["code"]
    d = daemon_factory()
    d.wait_until_ready()
    proc, work = caller(asterisk, code, [("pause", 2500), ("bye", None)], "33611000071")
    d.wait_for_log("conference_member_join", role="organizer")
    assert sipp.finish(proc, work).ok
    call_id = d.wait_for_log("call_finished")["call_id"]
    d.stop()
    shown = cli(d, "call", "show", call_id, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    trace = next(c for c in view["cdrs"] if c["leg_id"] == call_id)["extra"]["trace"]
    kinds = [t["kind"] for t in trace]
    assert kinds[0] == "answer" and "custom" in kinds  # the conference step (docs/dialplan.md)
    conference = next(t for t in trace if t["kind"] == "custom")
    assert conference["result"] == "caller hung up" and "keys" not in conference  # the code is never seen
    assert code not in shown.stdout  # nowhere in the call's view: trace, CDR, events
    assert [e["what"] for e in view["conference_events"]] == ["join", "leave"]
