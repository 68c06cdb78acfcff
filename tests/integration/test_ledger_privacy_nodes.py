"""`callctl privacy erase` and `suspension purge` on a node where some of the person's recordings are
not: those files are on the node that made them (docs/scaling.md "Recordings in a cluster"), so their
rows stay, and the command says so (node, recording, the command to run there) and exits 1 ("needs
attention") instead of reporting a complete erasure. Real PostgreSQL, the CLI as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO
from tests.integration.test_recording_retention import account, make, ok, on_node

pytestmark = pytest.mark.integration


def run_on(node: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_NODE_ID=node)
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=90)


def test_an_erase_that_leaves_another_nodes_recording_names_it_and_exits_needing_attention(
        database_url: str, tmp_path: Path) -> None:
    theirs = make(database_url, tmp_path, "conference", heard_by="p7@example.com", node_id="node-b")
    mine = make(database_url, tmp_path, "conference", heard_by="p7@example.com", node_id="node-a")
    (tmp_path / f"{theirs}.WAV").unlink()  # on node-b's disk, not on node-a's

    dry = run_on("node-a", database_url, "privacy", "erase", "--email", "p7@example.com", "--dry-run")
    assert dry.returncode == 1, dry.stderr
    erased = run_on("node-a", database_url, "privacy", "erase", "--email", "p7@example.com")
    assert erased.returncode == 1, erased.stderr
    assert "1 recording(s) kept" in erased.stderr and "node(s) node-b" in erased.stderr
    doc: dict[str, Any] = json.loads(erased.stdout)
    assert (doc["counts"]["recordings"], doc["counts"]["recordings_on_other_node"]) == (1, 1)
    assert doc["needs_attention"] == [{"recording": str(theirs), "node": "node-b",
                                       "location": str(tmp_path / f"{theirs}.WAV"),
                                       "to_do": f"on node node-b: callctl recordings delete {theirs}"}]
    assert not (tmp_path / f"{mine}.WAV").exists()
    assert [r["id"] for r in ok(database_url, "recordings", "list")] == [str(theirs)]  # its row is kept
    # What needs_attention says to do, done on node-b, finishes the erasure.
    assert on_node("node-b", database_url, "recordings", "delete", str(theirs))["id"] == str(theirs)
    assert ok(database_url, "recordings", "list") == []


def test_a_suspension_purge_that_leaves_another_nodes_call_recording_exits_needing_attention(
        database_url: str, tmp_path: Path) -> None:
    acc = account(database_url)
    theirs = make(database_url, tmp_path, "call", account_id=acc, node_id="node-b")
    (tmp_path / f"{theirs}.WAV").unlink()
    assert run_on("node-a", database_url, "suspension", "suspend", str(acc), "--now",
                  "2026-01-01T00:00:00+00:00").returncode == 0
    purged = run_on("node-a", database_url, "suspension", "purge", "--now", "2026-02-02T00:00:00+00:00")
    assert purged.returncode == 1, purged.stderr
    [done] = json.loads(purged.stdout)["purged"]
    assert done["counts"]["recordings_on_other_node"] == 1
    assert [(i["recording"], i["node"]) for i in done["needs_attention"]] == [(str(theirs), "node-b")]
