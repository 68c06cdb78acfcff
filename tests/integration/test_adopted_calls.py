"""Calls an engine restart finds up (docs/operations.md, "Restarts: what callers hear"): a dialer call its flow
had bridged with someone stays as it is (no flow replayed, no second dial) and stays its account's (its CDR
on the account's statement, billed from the first answer). Real Asterisk, SIPp as the PSTN, the first
engine killed with SIGKILL."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_gating_asterisk import originate
from tests.integration.test_lines_cli import cli, run_cli
from tests.support import sipp
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CALLEE = "+442079460000"  # the United Kingdom: no canvassing window, callable at any hour


def dialer_account(database_url: str) -> dict[str, Any]:
    acc = cli(database_url, "account", "create", "--name", "Dialer SAS", "--country", "FR")
    deck = Path(os.environ.get("TMPDIR", "/tmp")) / f"deck-{acc['id']}.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n44,United Kingdom,2,0.60,EUR\n"
                    "33,France,2,0.60,EUR\n")
    done = [run_cli(database_url, "rates", "import", str(deck), "--deck", "dialer"),
            run_cli(database_url, "credit", "add", "--account", acc["id"], "5.00")]
    assert all(r.returncode == 0 for r in done), [r.stderr for r in done]
    return acc


def test_a_dialer_call_its_flow_bridged_stays_up_and_its_accounts_across_an_engine_restart(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    acc = dialer_account(database_url)
    # The PSTN: the callee answers the dialer's call, then the number its flow dials (pstn-demo) answers.
    far = sipp.start_far_end(asterisk.trunk_port, "answer", calls=2)
    d = daemon_factory()
    d.wait_until_ready()
    code, placed = originate(database_url, d, "--account", acc["id"], "--flow", "pstn-demo", "--from",
                             "+33170000001", "--to", CALLEE)
    assert code == 0 and placed["originated"] is True, placed
    wait_for(lambda: "call-" in asterisk.rx("bridge show all", check=False), 20,
             "the dialer call bridged by its flow")
    assert d.proc is not None
    killed_at = dt.datetime.now(dt.UTC)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    restarted = daemon_factory()
    assert restarted.wait_for_log("ari_resynced", 30)["adopted"] == 1  # the dialer call; the leg is its call's
    resumed = restarted.wait_for_log("dialer_call_resumed", 10)
    assert resumed["flow"] == "pstn-demo"
    # Both parties hang up once the call was resumed (this worker's Asterisk carries only this test's calls).
    asterisk.rx("channel request hangup all")
    far_result = sipp.finish(*far, timeout_s=60)
    assert far_result.ok, far_result.stderr
    assert sum("INVITE sip:" in text for _at, text in far_result.messages) == 2  # no second dial
    finished = restarted.wait_for_log("call_finished", 20)
    assert finished["outcome"] in ("resumed_answered", "caller_hung_up"), finished
    rows = wait_for_cdrs(database_url, 2)
    call = next(r for r in rows if json.loads(r["extra"]).get("originated"))
    # The account's call, as the first engine tagged it: on its statement, billed from the first answer.
    assert (call["flow"], str(call["account_id"]), call["direction"], call["to_number"]) == \
        ("pstn-demo", acc["id"], "outbound", CALLEE)
    # Billed from the first engine's answer, so the seconds with no engine are in: never from the resumption.
    down_s = (dt.datetime.fromisoformat(resumed["ts"].replace("Z", "+00:00")) - killed_at).total_seconds()
    assert call["answered_at"] < killed_at and call["billed_s"] >= down_s, (call["billed_s"], down_s)
    assert not restarted.tracebacks()


def test_a_dialer_call_whose_flow_starts_with_a_dial_is_billed_from_the_callees_answer(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    acc = dialer_account(database_url)
    # Each call rings 3 s: the callee's phone, then the number the flow dials while the callee waits.
    far = sipp.start_far_end(asterisk.trunk_port, "answer", ring_ms=3000, calls=2)
    d = daemon_factory()
    d.wait_until_ready()
    code, placed = originate(database_url, d, "--account", acc["id"], "--flow", "pstn-demo", "--from",
                             "+33170000001", "--to", CALLEE)
    assert code == 0 and placed["originated"] is True, placed
    wait_for(lambda: "call-" in asterisk.rx("bridge show all", check=False), 20, "the dialer call bridged")
    asterisk.rx("channel request hangup all")  # this worker's Asterisk carries only this test's calls
    assert sipp.finish(*far, timeout_s=60).ok
    rows = wait_for_cdrs(database_url, 2)
    call = next(r for r in rows if json.loads(r["extra"]).get("originated"))
    dialled = next(r for r in rows if r is not call)
    # The callee answered 3 s of ringing before the dialled number did: those seconds are the call's.
    waited_s = (dialled["answered_at"] - call["answered_at"]).total_seconds()
    assert waited_s >= 2.5, waited_s
    assert call["billed_s"] >= dialled["billed_s"] + 2, (call["billed_s"], dialled["billed_s"])
    assert not d.tracebacks()
