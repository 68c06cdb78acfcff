"""`make bench`'s conference flow at its smallest: real Asterisk, real SIPp callers keying their own
codes, callctl and the native dialplan side by side (so the benchmark cannot rot unnoticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.devstack import REPO

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_the_conference_bench_joins_every_caller_in_both_implementations_and_writes_its_figures(
        tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "bench.conference_load", "--rates", "2", "--step-s", "1",
                          "--hold-s", "1", "--memory-calls", "4", "--memory-rate", "4", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=280,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    figures = json.loads((tmp_path / "conference.json").read_text())
    steps = {s["impl"]: s for s in figures["steps"]}
    assert set(steps) == {"native", "callctl"}
    for s in steps.values():
        assert s["ok"] and s["joined"] == s["calls"] == 2, s
        assert s["join_ms_p50"] is not None and s["answer_ms_p50"] is not None
        assert s["asterisk_cpu_ms_per_call"] > 0
    assert steps["callctl"]["engine_cpu_ms_per_call"] > 0 and steps["callctl"]["lag_ms_p99"] is not None
    memory = figures["memory"]["callctl"]
    assert memory["failed"] == 0 and memory["peak_calls_up"] == 4 and memory["engine_rss_mib"] > 0
    assert figures["machine"]["asterisk"].startswith("Asterisk 22")
