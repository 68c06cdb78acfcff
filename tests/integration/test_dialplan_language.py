"""The dialplan language on real calls (issue 23): a day/night switch flipped from the command
line closes the shipped reception line for the next real call, with who and when logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.support import sipp

pytestmark = pytest.mark.integration

RECEPTION_FR = "+33900000003"


def callctl(database_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    env["CALLCTL_DIALPLAN_DIR"] = str(REPO / "dialplan")
    return subprocess.run([sys.executable, "-m", "callctl", *argv], capture_output=True, text=True, env=env,
                          timeout=60)


def test_switch_flipped_on_closes_the_line_for_the_next_real_call(daemon_factory: Any, asterisk: AsteriskInstance,
                                                                  database_url: str) -> None:
    flipped = callctl(database_url, "dialplan", "switch", "reception-closed", "on", "--by", "night-desk",
                      "--reason", "strike")
    assert flipped.returncode == 0, flipped.stderr
    assert json.loads(flipped.stdout)["on"] is True  # stdout is JSON only
    d = daemon_factory(log_level="debug")
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, RECEPTION_FR, [("wait_bye", None)], bye_timeout_s=30)
    assert result.ok, result.stderr
    d.wait_for_log("call_finished")
    steps = d.events("flow_step")
    notes = " ".join(" ".join(e.get("notes", [])) for e in steps)
    assert "switch 'reception-closed' is on (switched by night-desk" in notes, notes
    assert "closed" in [e["step"] for e in steps]
    assert "choice" not in [e["step"] for e in steps]  # the menu of an open line never ran

    shown = callctl(database_url, "dialplan", "switch", "reception-closed")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    assert state["on"] is True and state["by"] == "night-desk"
    assert state["history"][0]["reason"] == "strike"


def test_switching_an_undeclared_switch_is_refused_with_a_suggestion(database_url: str) -> None:
    refused = callctl(database_url, "dialplan", "switch", "reception-closd", "on")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "unknown switch 'reception-closd' (did you mean 'reception-closed'?)" in refused.stderr
