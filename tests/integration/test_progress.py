"""Long CLI operations show a progress bar on a terminal and stay quiet in scripts (issue 21)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.devstack import REPO

pytestmark = pytest.mark.integration


EXTRA: dict[str, str] = {}  # CALLCTL_* settings of the test running now


def env_for(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update({"CALLCTL_DATABASE_URL": database_url, "TERM": "xterm", "COLUMNS": "120", **EXTRA})
    return env


def on_a_terminal(database_url: str, *args: str) -> str:
    """The command run on a pseudo-terminal (util-linux `script`): what a person at a terminal sees."""
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "callctl", *args))
    res = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=env_for(database_url), cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False, errors="replace")
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def in_a_script(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env_for(database_url), cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)


def test_deck_and_opposition_list_imports_draw_a_bar_on_a_terminal_only(database_url: str, tmp_path: Path) -> None:
    deck = tmp_path / "big-deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n"
                    + "".join(f"33{n:06d},France,1,0.02,EUR\n" for n in range(30_000)))
    optout = tmp_path / "bloctel.txt"
    optout.write_text("".join(f"06{n:08d}\n" for n in range(30_000)))

    shown = on_a_terminal(database_url, "rates", "import", str(deck), "--deck", "big")
    assert "reading big-deck.csv" in shown and "30000/30000" in shown  # the bar, finished
    assert '"rows": 30000' in shown

    quiet = in_a_script(database_url, "rates", "import", str(deck), "--deck", "big2")
    assert quiet.stderr == "" and json.loads(quiet.stdout)["rows"] == 30000

    shown = on_a_terminal(database_url, "optout", "import", str(optout))
    assert "opposition list bloctel.txt" in shown and '"numbers": 30000' in shown
    quiet = in_a_script(database_url, "optout", "import", str(optout))
    assert quiet.stderr == "" and json.loads(quiet.stdout)["numbers"] == 30000

    shown = on_a_terminal(database_url, "recordings", "purge", "--dry-run")
    assert "recordings purge" in shown
    quiet = in_a_script(database_url, "recordings", "purge", "--dry-run")
    assert quiet.stderr == "" and json.loads(quiet.stdout)["dry_run"] is True


def test_a_privacy_export_shows_its_outbox_search_on_a_terminal_only(database_url: str, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    for n in range(50):
        (outbox / f"m{n}.eml").write_text(f"To: {'ann' if n % 10 == 0 else 'bob'}@example.com\n\nhello\n")
    EXTRA["CALLCTL_OUTBOX_DIR"] = str(outbox)
    try:
        shown = on_a_terminal(database_url, "privacy", "export", "--email", "ann@example.com")
        assert "searching the outbox" in shown and "50/50" in shown
        quiet = in_a_script(database_url, "privacy", "export", "--email", "ann@example.com")
        assert quiet.stderr == "" and len(json.loads(quiet.stdout)["outbox_files"]) == 5
    finally:
        EXTRA.clear()
