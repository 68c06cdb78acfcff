"""Recordings at rest on a real PostgreSQL: purge by class and age (dates injected), legal hold,
the audit, the account option, export of a tampered file, missing files reported not fatal."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.store import recordings as store
from scripts.devstack import REPO
from tests.integration.test_conference import db
from tests.integration.test_recording import callctl

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.UTC)


def make(database_url: str, tmp_path: Path, source: str, *, ended_at: dt.datetime = T0,
         account_id: uuid.UUID | None = None, content: bytes = b"RIFF-fake-audio",
         conference_id: str | None = None, heard_by: str | None = None, node_id: str | None = None) -> uuid.UUID:
    """A stored recording with a file, as the engine leaves it (in ``tmp_path``)."""
    rid = uuid.uuid4()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{rid}.WAV"
    path.write_bytes(content + rid.bytes)
    data = path.read_bytes()

    async def work() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await store.create(conn, recording_id=rid, source=source, asterisk_name=f"callctl-{rid}",
                               bridge_id="b", fmt="wav49", started_at=ended_at - dt.timedelta(minutes=10),
                               retention_class=source,
                               conference_id=(uuid.UUID(conference_id) if conference_id else uuid.uuid4())
                               if source == "conference" else None,
                               call_id=uuid.uuid4() if source == "call" else None, account_id=account_id,
                               node_id=node_id)
            await store.finish(conn, rid, ended_at=ended_at, duration_ms=600_000, size_bytes=len(data),
                               sha256=hashlib.sha256(data).hexdigest(), location=str(path))
            if heard_by is not None:
                await store.add_notice(conn, rid, heard_by, "leg", "recording-notice-conference:en", "en", ended_at)
        finally:
            await conn.close()

    asyncio.run(work())
    return rid


def ok(database_url: str, *args: str) -> Any:
    res = callctl(database_url, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


def account(database_url: str, recording: bool = True) -> uuid.UUID:
    args = ["account", "create", "--name", "Acme", "--country", "FR"] + (["--recording"] if recording else [])
    return uuid.UUID(ok(database_url, *args)["id"])


def test_purge_deletes_by_class_at_the_right_age_keeps_held_ones_and_audits(database_url: str,
                                                                            tmp_path: Path) -> None:
    acc = account(database_url)
    conf = make(database_url, tmp_path, "conference")
    call = make(database_url, tmp_path, "call", account_id=acc)
    held = make(database_url, tmp_path, "conference")
    ok(database_url, "recordings", "hold", str(held), "--reason", "court order 42")
    shown = ok(database_url, "recordings", "show", str(held))
    assert shown["legal_hold"] is True and shown["file"] == "ok" and shown["notices"] == []
    assert [(a["action"], a["detail"]) for a in shown["audit"]] == [("held", {"reason": "court order 42"})]
    refused = callctl(database_url, "recordings", "delete", str(held))
    assert refused.returncode != 0 and "legal hold (court order 42)" in refused.stderr, refused.stderr

    # Just under 3 months: nothing goes.
    first = ok(database_url, "recordings", "purge", "--now", "2026-04-10T08:59:00+00:00")
    assert first["deleted"] == [] and first["kept"] == 3 and first["held"] == []
    # Past 3 months: the call recording goes, the conference recordings stay (6 months).
    dry = ok(database_url, "recordings", "purge", "--dry-run", "--now", "2026-04-10T09:01:00+00:00")
    assert ids(dry["deleted"]) == {str(call)} and (tmp_path / f"{call}.WAV").exists()
    second = ok(database_url, "recordings", "purge", "--now", "2026-04-10T09:01:00+00:00")
    assert [(d["id"], d["rule"], d["file"]) for d in second["deleted"]] == [(str(call), "retention_age", "deleted")]
    assert not (tmp_path / f"{call}.WAV").exists()
    # Past 6 months: the conference recording goes, the held one stays (and says why).
    third = ok(database_url, "recordings", "purge", "--now", "2026-07-10T09:01:00+00:00")
    assert ids(third["deleted"]) == {str(conf)}
    assert third["held"] == [{"id": str(held), "rule": "retention_age", "hold_reason": "court order 42"}]
    assert (tmp_path / f"{held}.WAV").exists()
    # Idempotent: nothing more to do.
    again = ok(database_url, "recordings", "purge", "--now", "2026-07-10T09:01:00+00:00")
    assert again["deleted"] == [] and ids(again["held"]) == {str(held)}
    # Released, it goes at the next run.
    ok(database_url, "recordings", "release", str(held))
    assert ids(ok(database_url, "recordings", "purge", "--now", "2026-07-10T09:01:00+00:00")["deleted"]) == {str(held)}

    audit = db(database_url, "SELECT recording_id, action, rule, detail FROM recording_audit ORDER BY id")
    assert [(str(a["recording_id"]), a["action"], a["rule"]) for a in audit] == [
        (str(held), "held", "legal_hold"), (str(call), "deleted", "retention_age"),
        (str(conf), "deleted", "retention_age"), (str(held), "released", "legal_hold"),
        (str(held), "deleted", "retention_age")]
    assert json.loads(audit[1]["detail"])["sha256"]
    assert db(database_url, "SELECT count(*) AS n FROM recording")[0]["n"] == 0


def test_disabling_the_account_option_deletes_its_call_recordings(database_url: str, tmp_path: Path) -> None:
    acc = account(database_url)
    other = account(database_url)
    mine = [make(database_url, tmp_path, "call", account_id=acc) for _ in range(2)]
    theirs = make(database_url, tmp_path, "call", account_id=other)
    out = ok(database_url, "account", "recording", str(acc), "--disable")
    assert out["recording"] is False and ids(out["deleted"]) == {str(r) for r in mine}
    assert all(d["rule"] == "account_recording_off" for d in out["deleted"])
    assert ids(ok(database_url, "recordings", "list")) == {str(theirs)}
    assert db(database_url, "SELECT recording FROM account WHERE id = $1", acc)[0]["recording"] is False
    assert ok(database_url, "account", "recording", str(acc), "--enable")["recording"] is True
    bad = callctl(database_url, "account", "recording", str(uuid.uuid4()), "--enable")
    assert bad.returncode != 0 and "no account" in bad.stderr


def test_export_refuses_a_tampered_file_and_list_and_purge_report_missing_ones(database_url: str,
                                                                               tmp_path: Path) -> None:
    good = make(database_url, tmp_path, "conference")
    tampered = make(database_url, tmp_path, "conference")
    missing = make(database_url, tmp_path, "conference")
    path = tmp_path / f"{tampered}.WAV"
    data = bytearray(path.read_bytes())
    data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / f"{missing}.WAV").unlink()
    out = tmp_path / "out"
    out.mkdir()
    assert ok(database_url, "recordings", "export", str(good), str(out))["exported_to"] == str(out / f"{good}.WAV")
    refused = callctl(database_url, "recordings", "export", str(tampered), str(out))
    assert refused.returncode != 0 and "corrupt" in refused.stderr and "sha256" in refused.stderr, refused.stderr
    assert not (out / f"{tampered}.WAV").exists()
    listed = {r["id"]: r["file"] for r in ok(database_url, "recordings", "list")}
    assert listed == {str(good): "ok", str(tampered): "corrupt", str(missing): "missing"}
    report = ok(database_url, "recordings", "purge", "--now", "2026-02-01T00:00:00+00:00")
    assert {p["id"]: p["file"] for p in report["problems"]} == {str(tampered): "corrupt", str(missing): "missing"}
    # The organizer deletes one at any time; a missing file does not stop the row from going.
    gone = ok(database_url, "recordings", "delete", str(missing))
    assert gone == {"id": str(missing), "rule": "deleted_on_request", "file": "already_missing"}
    unknown = callctl(database_url, "recordings", "delete", str(missing))
    assert unknown.returncode != 0 and f"no recording {missing}" in unknown.stderr


def test_privacy_export_and_erase_cover_the_recordings_a_person_is_in(database_url: str, tmp_path: Path) -> None:
    from tests.integration.test_conference import book
    from tests.integration.test_privacy_postgres import cli as privacy

    folder = tmp_path / "recordings"  # where the daemon files them: spool_dir/../recordings
    conf = book(database_url, tmp_path, participants=1)
    organised = make(database_url, folder, "conference", conference_id=conf["id"])
    heard = make(database_url, folder, "conference", heard_by="p9@example.com")
    other = make(database_url, folder, "conference", heard_by="someone@example.com")
    acc = account(database_url)
    calls = [make(database_url, folder, "call", account_id=acc) for _ in range(2)]

    inventory = {i["item"]: i for i in privacy(database_url, tmp_path, "privacy", "inventory")["items"]}
    assert inventory["recording"]["files"] == 5
    exported = privacy(database_url, tmp_path, "privacy", "export", "--email", "P9@example.com")
    assert [r["id"] for r in exported["recordings"]["recordings"]] == [str(heard)]
    erased = privacy(database_url, tmp_path, "privacy", "erase", "--email", "p9@example.com")
    assert erased["counts"]["recordings"] == 1 and not (folder / f"{heard}.WAV").exists()
    erased = privacy(database_url, tmp_path, "privacy", "erase", "--email", "org@example.com")
    assert erased["counts"]["recordings"] == 1 and not (folder / f"{organised}.WAV").exists()
    # A suspended account's call recordings go with its data a month later.
    privacy(database_url, tmp_path, "suspension", "suspend", str(acc), "--now", "2026-01-01T00:00:00+00:00")
    purged = privacy(database_url, tmp_path, "suspension", "purge", "--now", "2026-02-02T00:00:00+00:00")
    assert purged["purged"][0]["counts"]["recordings"] == 2
    assert not any((folder / f"{c}.WAV").exists() for c in calls)
    assert [r["id"] for r in ok(database_url, "recordings", "list")] == [str(other)]
    rules_seen = [r["rule"] for r in db(database_url, "SELECT rule FROM recording_audit ORDER BY id")]
    assert rules_seen == ["privacy_erase", "privacy_erase", "account_service_ended", "account_service_ended"]


def on_node(node: str, database_url: str, *args: str) -> Any:
    """``callctl ARGS`` run on ``node`` (CALLCTL_NODE_ID); its JSON answer, or the failed process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_NODE_ID=node)
    res = subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=90)
    return json.loads(res.stdout) if res.returncode == 0 else res


def test_a_deletion_keeps_the_row_of_another_nodes_recording_whose_file_is_not_here(database_url: str,
                                                                                   tmp_path: Path) -> None:
    acc = account(database_url)
    theirs = make(database_url, tmp_path, "conference", node_id="node-b")
    mine = make(database_url, tmp_path, "conference", node_id="node-a")
    older = make(database_url, tmp_path, "conference")  # made before node_id existed
    shared = make(database_url, tmp_path, "conference", node_id="node-b")  # its file is here (shared folder)
    their_call = make(database_url, tmp_path, "call", account_id=acc, node_id="node-b")
    for rid in (theirs, mine, older, their_call):
        (tmp_path / f"{rid}.WAV").unlink()

    # Purge on node-a: node-b's missing file may be on node-b's disk: its row stays, named as a problem.
    report = on_node("node-a", database_url, "recordings", "purge", "--now", "2026-07-10T09:01:00+00:00")
    assert {d["id"]: d["file"] for d in report["deleted"]} == {
        str(mine): "already_missing", str(older): "already_missing", str(shared): "deleted"}
    assert {p["id"]: p for p in report["problems"] if p["file"] == "on_other_node"} == {
        str(r): {"id": str(r), "file": "on_other_node", "node": "node-b", "location": str(tmp_path / f"{r}.WAV")}
        for r in (theirs, their_call)}
    assert {r["id"]: r["node"] for r in ok(database_url, "recordings", "list")} == {
        str(theirs): "node-b", str(their_call): "node-b"}
    # The organizer's delete and the account option switched off, on node-a: refused / kept, saying where.
    refused = on_node("node-a", database_url, "recordings", "delete", str(theirs))
    assert refused.returncode != 0 and "node node-b made it" in refused.stderr and "row kept" in refused.stderr
    off = on_node("node-a", database_url, "account", "recording", str(acc), "--disable")
    assert off["deleted"] == [] and [p["node"] for p in off["problems"]] == ["node-b"]
    # On node-b (the file is not on its disk either): the rows go as before.
    again = on_node("node-b", database_url, "recordings", "purge", "--now", "2026-07-10T09:01:00+00:00")
    assert {d["id"]: d["file"] for d in again["deleted"]} == {
        str(theirs): "already_missing", str(their_call): "already_missing"}
    assert {p["id"]: p["file"] for p in again["problems"]} == {str(theirs): "missing", str(their_call): "missing"}
    assert db(database_url, "SELECT count(*) AS n FROM recording")[0]["n"] == 0


def test_the_engine_stores_its_node_on_each_recording_it_makes(database_url: str, tmp_path: Path) -> None:
    from callctl.recording.service import RecordingService
    from tests.unit.test_recording_service import FakeOps

    async def work() -> str | None:
        conn = await asyncpg.connect(database_url)
        try:
            service = RecordingService(conn, FakeOps(), tmp_path, node="node-a")
            active = await service.start("conference", "bridge-1", [], conference_id=str(uuid.uuid4()))
            assert active is not None
            rec = await store.get(conn, active.id)
            assert rec is not None
            return rec.node_id
        finally:
            await conn.close()

    assert asyncio.run(work()) == "node-a"
