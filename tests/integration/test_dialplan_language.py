"""The dialplan language on real calls (issue 23): a day/night switch flipped from the command
line closes the shipped reception line for the next real call (who and when logged), and the
caller leaves a voicemail message that is filed like a recording and e-mailed with its audio."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
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


def test_switch_on_closes_the_line_and_the_caller_leaves_a_voicemail_that_is_emailed(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    flipped = callctl(database_url, "dialplan", "switch", "reception-closed", "on", "--by", "night-desk",
                      "--reason", "strike")
    assert flipped.returncode == 0, flipped.stderr
    assert json.loads(flipped.stdout)["on"] is True  # stdout is JSON only
    outbox = tmp_path / "outbox"
    d = daemon_factory(log_level="debug", outbox_dir=str(outbox))
    d.wait_until_ready()
    # The caller listens to the closed notice (4 s) and the greeting (vm-intro, 7 s) and the beep,
    # speaks for 4 s, then hangs up: how most messages end.
    result = sipp.call(asterisk.sip_port, RECEPTION_FR, [("pause", 12500), ("audio", 4), ("bye", None)])
    assert result.ok, result.stderr
    left = d.wait_for_log("voicemail_left", timeout_s=40)
    steps = d.events("flow_step")
    notes = " ".join(" ".join(e.get("notes", [])) for e in steps)
    assert "switch 'reception-closed' is on (switched by night-desk" in notes, notes
    assert "closed" in [e["step"] for e in steps]
    assert "choice" not in [e["step"] for e in steps]  # the menu of an open line never ran

    listed = callctl(database_url, "voicemail", "list", "--box", "reception")
    assert listed.returncode == 0, listed.stderr
    [message] = json.loads(listed.stdout)
    assert message["id"] == left["recording_id"] and message["caller"].endswith("33612345678")
    assert message["file"] == "ok" and message["source"] == "voicemail" and message["duration_ms"] > 1000
    assert message["called"] == RECEPTION_FR
    mails = wait_for_files(outbox, "voicemail-*.eml")
    mail = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    assert mail["To"] == "reception@callctl.invalid"
    [audio] = [part for part in mail.iter_attachments() if part.get_content_type() == "audio/x-wav"]
    assert hashlib.sha256(audio.get_content()).hexdigest() == message["sha256"]

    exported = callctl(database_url, "voicemail", "export", message["id"], str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    deleted = callctl(database_url, "voicemail", "delete", message["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(callctl(database_url, "voicemail", "list").stdout) == []

    everything = json.loads(callctl(database_url, "dialplan", "switch").stdout)
    assert [(s["switch"], s["on"]) for s in everything] == [("reception-closed", True)]
    shown = callctl(database_url, "dialplan", "switch", "reception-closed")
    state = json.loads(shown.stdout)
    assert state["on"] is True and state["by"] == "night-desk"
    assert state["history"][0]["reason"] == "strike"


def wait_for_files(folder: Path, pattern: str, timeout_s: float = 20) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} in {folder} within {timeout_s} s")


def test_switching_an_undeclared_switch_is_refused_with_a_suggestion(database_url: str) -> None:
    refused = callctl(database_url, "dialplan", "switch", "reception-closd", "on")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "unknown switch 'reception-closd' (did you mean 'reception-closed'?)" in refused.stderr


def test_simulate_reads_the_recorded_switch_state_from_postgresql(database_url: str) -> None:
    assert callctl(database_url, "dialplan", "switch", "reception-closed", "on", "--by", "alice").returncode == 0
    shown = callctl(database_url, "dialplan", "simulate", "--to", RECEPTION_FR)
    assert shown.returncode == 0, shown.stderr
    assert "switch 'reception-closed' is on (switched by alice at " in shown.stdout, shown.stdout
    overridden = callctl(database_url, "dialplan", "simulate", "--to", RECEPTION_FR, "--switch", "reception-closed=off")
    assert "switch 'reception-closed' is off (set by simulate --switch)" in overridden.stdout, overridden.stdout
