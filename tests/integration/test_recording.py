"""Conference recording on a real Asterisk: SIPp callers send G.711 speech (g711a.pcap), the
organizer starts recording with *3, a late joiner arrives, the command line stops it."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import REPO, AsteriskInstance
from tests.integration.test_conference import ACCESS, book, bridged_channels, caller, db
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration


def callctl(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env["CALLCTL_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "callctl", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=90)


def sox_stat(path: Path) -> dict[str, float]:
    out = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True, check=True).stderr
    stats = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        try:
            stats[name.strip()] = float(value)
        except ValueError:
            continue
    return stats


def talk(seconds: int) -> list[tuple[str, object]]:
    """G.711 speech for about ``seconds`` (the capture lasts 7 s)."""
    return [("audio", 7.0)] * (seconds // 7)


def test_organizer_records_the_conference_after_everyone_heard_the_notice(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=2)
    d = daemon_factory()
    d.wait_until_ready()
    # No room yet: the command line is told so, clearly.
    refused = callctl(database_url, "conference", "record", conf["id"], "--start", "--wait", "10")
    assert refused.returncode != 0 and "no live room" in refused.stderr, refused.stderr
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 6000), ("dtmf", "*3"), *talk(28), ("bye", None)],
                 "33611000091")
    early = caller(asterisk, conf["participants"][0]["code"], [*talk(35), ("bye", None)], "33611000092",
                   lead_ms=2500)
    started = d.wait_for_log("recording_started", 40)
    # A late joiner, after recording started: hears the notice before entering the bridge.
    late = caller(asterisk, conf["participants"][1]["code"], [*talk(14), ("bye", None)], "33611000093", lead_ms=1500)
    wait_for(lambda: 3 in bridged_channels(asterisk), 30, "the late joiner in the room")
    stop = callctl(database_url, "conference", "record", conf["id"], "--stop")
    assert stop.returncode == 0, stop.stderr
    filed = d.wait_for_log("recording_filed", 30)
    for proc, work in (org, early, late):
        assert sipp.finish(proc, work).ok

    [rec] = db(database_url, "SELECT * FROM recording WHERE conference_id = $1", uuid.UUID(conf["id"]))
    assert str(rec["id"]) == started["recording_id"] == filed["recording_id"]
    assert rec["state"] == "stored" and rec["format"] == "wav49" and rec["retention_class"] == "conference"
    path = Path(rec["location"])
    data = path.read_bytes()
    assert len(data) == rec["size_bytes"] and hashlib.sha256(data).hexdigest() == rec["sha256"]
    assert path.stat().st_mode & 0o777 == 0o600
    stats = sox_stat(path)
    assert stats["RMS     amplitude"] > 0.01, stats  # speech, not silence
    # As long as it was recording: from the start to the stop the engine stored.
    recorded_s = (rec["ended_at"] - rec["started_at"]).total_seconds()
    assert abs(stats["Length (seconds)"] - recorded_s) < 1.5, (stats["Length (seconds)"], recorded_s)
    assert abs(rec["duration_ms"] / 1000 - stats["Length (seconds)"]) < 0.1
    assert recorded_s > 5

    # The notice: organizer and early participant before the recording started; the late joiner
    # before joining the bridge. Each in the conference's language, with the prompt's id.
    notices = {n["party"]: n for n in db(database_url, "SELECT * FROM recording_notice WHERE recording_id = $1",
                                         rec["id"])}
    assert set(notices) == {"org@example.com", "p0@example.com", "p1@example.com"}
    assert all(n["prompt"] == "recording-notice-conference:en" and n["language"] == "en" for n in notices.values())
    assert notices["org@example.com"]["heard_at"] <= rec["started_at"]
    assert notices["p0@example.com"]["heard_at"] <= rec["started_at"]
    [late_join] = db(database_url, "SELECT at FROM conference_event WHERE person = 'p1@example.com' AND what = 'join'")
    assert notices["p1@example.com"]["heard_at"] <= late_join["at"]

    listed = callctl(database_url, "recordings", "list", "--conference", conf["id"])
    assert listed.returncode == 0 and '"file": "ok"' in listed.stdout, listed.stdout
    out = tmp_path / "export.wav"
    assert callctl(database_url, "recordings", "export", str(rec["id"]), str(out)).returncode == 0
    assert out.read_bytes() == data
    assert not d.tracebacks()
    assert "33611000093" not in "\n".join(d.raw)


def test_a_recording_survives_the_engine_being_killed_and_is_filed_by_the_next_one(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    first = daemon_factory()
    first.wait_until_ready()
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 6000), ("dtmf", "*3"), *talk(28), ("bye", None)],
                 "33611000094")
    part = caller(asterisk, conf["participants"][0]["code"], [*talk(35), ("bye", None)], "33611000095",
                  lead_ms=2500)
    started = first.wait_for_log("recording_started", 40)
    assert first.proc is not None
    first.proc.kill()  # no goodbye: Asterisk goes on recording the bridge
    first.wait_exit()
    second = daemon_factory()
    second.wait_until_ready()
    reattached = second.wait_for_log("recording_reattached", 20)
    assert reattached["recording_id"] == started["recording_id"]
    for proc, work in (org, part):
        # The adopted calls restart their flow (the code prompt again, three 10 s attempts): each caller
        # hangs up itself first, after its speech; neither is cut by the kill or the adoption.
        result = sipp.finish(proc, work)
        assert result.ok, result.stderr
    filed = second.wait_for_log("recording_filed", 40)
    assert filed["recording_id"] == started["recording_id"]
    [rec] = db(database_url, "SELECT * FROM recording WHERE id = $1", uuid.UUID(started["recording_id"]))
    assert rec["state"] == "stored"
    # It holds what was said across the restart: longer than the first engine's share of it.
    first_share_s = (dt.datetime.fromisoformat(reattached["ts"]) - dt.datetime.fromisoformat(started["ts"]))
    assert rec["duration_ms"] / 1000 > first_share_s.total_seconds()
    assert sox_stat(Path(rec["location"]))["RMS     amplitude"] > 0.01


def test_after_a_restart_the_conference_recording_follows_its_members_into_the_new_room(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    code = conf["organizer"]["code"]
    first = daemon_factory()
    first.wait_until_ready()
    # After the restart the adopted call hears the code prompt again (its flow restarts): the organizer
    # keys the code again, twice for safety (in the room, digits without * are ignored).
    steps = [("pause", 1200), ("dtmf", code + "#"), ("pause", 6000), ("dtmf", "*3"), *talk(14), ("pause", 3000),
             ("dtmf", code + "#"), ("pause", 9000), ("dtmf", code + "#"), *talk(21), ("bye", None)]
    org = sipp.start_call(asterisk.sip_port, ACCESS, steps, caller="33611000096", timeout_s=120)  # a 65 s call
    started = first.wait_for_log("recording_started", 40)
    assert first.proc is not None
    first.proc.kill()
    first.wait_exit()
    second = daemon_factory()
    second.wait_until_ready()
    assert second.wait_for_log("recording_reattached", 20)["recording_id"] == started["recording_id"]
    # The organizer re-joins through the new engine: the old bridge empties, its recording is filed,
    # and the new room records (the organizer hears the notice again first).
    old = second.wait_for_log("recording_filed", 60, recording_id=started["recording_id"])
    followed = second.wait_for_log("recording_followed_members", 30)
    assert (followed["previous_recording_id"], followed["result"]) == (started["recording_id"], "started")
    new = second.wait_for_log("recording_started", 20)
    assert new["recording_id"] != started["recording_id"] and new["conference_id"] == conf["id"]
    # The previous engine's emptied bridge is destroyed (Asterisk would keep it until it restarts).
    wait_for(lambda: bridged_channels(asterisk) == [1], 20, "only the new room's bridge, with the organizer")
    assert second.wait_for_log("conference_old_bridge_destroyed", 5)
    assert sipp.finish(*org, timeout_s=150).ok  # the organizer hangs up: the room ends and files its recording
    second.wait_for_log("recording_filed", 40, recording_id=new["recording_id"])
    rows = {str(r["id"]): r for r in db(database_url, "SELECT * FROM recording WHERE conference_id = $1",
                                        uuid.UUID(conf["id"]))}
    assert set(rows) == {old["recording_id"], new["recording_id"]}
    assert all(r["state"] == "stored" for r in rows.values())
    notices = db(database_url, "SELECT party FROM recording_notice WHERE recording_id = $1",
                 uuid.UUID(new["recording_id"]))
    assert [n["party"] for n in notices] == ["org@example.com"]
    assert sox_stat(Path(rows[new["recording_id"]]["location"]))["RMS     amplitude"] > 0.01
    assert not second.tracebacks()
