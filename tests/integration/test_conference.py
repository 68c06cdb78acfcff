"""Dial-in conferences on a real Asterisk: SIPp callers key their personal codes (RFC 2833)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callctl.store import conferences as store
from scripts.devstack import REPO, AsteriskInstance
from tests.integration.test_daemon import wait_for_cdrs
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

ACCESS = "+33900000100"  # dialplan: conference entry, English


def cli(database_url: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
    env.update(CALLCTL_DATABASE_URL=database_url, CALLCTL_OUTBOX_DIR=str(tmp_path / "outbox"),
               CALLCTL_RESERVATION_ADDRESS="reservations@conf.example")
    res = subprocess.run([sys.executable, "-m", "callctl", "conference", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def book(database_url: str, tmp_path: Path, participants: int = 3, start: dt.datetime | None = None,
         minutes: int = 60, **opts: str) -> dict[str, Any]:
    start = start or dt.datetime.now(dt.UTC)
    args = ["create", "--subject", "Weekly", "--start", start.isoformat(), "--duration", str(minutes),
            "--organizer", "org@example.com", "--access-number", ACCESS]
    for i in range(participants):
        args += ["--participant", f"p{i}@example.com"]
    for key, value in opts.items():
        args += [f"--{key.replace('_', '-')}", value]
    return cli(database_url, tmp_path, *args)


def ari(asterisk: AsteriskInstance, path: str) -> Any:
    req = urllib.request.Request(f"{asterisk.ari_url}ari/{path}")
    token = base64.b64encode(f"{asterisk.ari_user}:{asterisk.ari_password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def bridged_channels(asterisk: AsteriskInstance) -> list[int]:
    """Members of each live conference bridge (rooms destroy their bridge when they close)."""
    return [len(b["channels"]) for b in ari(asterisk, "bridges") if b["id"].startswith("conf-")]


def caller(asterisk: AsteriskInstance, code: str, then: list[tuple[str, object]], number: str,
           lead_ms: int = 1200) -> tuple[subprocess.Popen[str], Path]:
    """A caller who waits for the code prompt to start, keys CODE#, then does ``then``."""
    return sipp.start_call(asterisk.sip_port, ACCESS, [("pause", lead_ms), ("dtmf", code + "#"), *then],
                           caller=number, bye_timeout_s=60)


def db(database_url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def timeline_whats(database_url: str, conference_id: str) -> list[str]:
    rows = db(database_url, "SELECT what FROM conference_event WHERE conference_id = $1::text::uuid", conference_id)
    return [r["what"] for r in rows]


def test_organizer_and_three_participants_end_up_in_one_bridge(daemon_factory: Any, asterisk: AsteriskInstance,
                                                                database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path)
    d = daemon_factory()
    d.wait_until_ready()
    calls = [caller(asterisk, conf["organizer"]["code"], [("pause", 9000), ("bye", None)], "33611000000")]
    for i, p in enumerate(conf["participants"]):
        calls.append(caller(asterisk, p["code"], [("pause", 6000 - i * 300), ("bye", None)], f"3361100000{i + 1}"))
    wait_for(lambda: 4 in bridged_channels(asterisk), 25, "one bridge holding the organizer and 3 participants")
    for proc, work in calls:
        result = sipp.finish(proc, work)
        assert result.ok, result.stderr
    rows = wait_for_cdrs(database_url, 4)
    assert {r["conference_id"] for r in rows} == {conf["id"]}
    assert sorted(r["role"] for r in rows) == ["organizer", "participant", "participant", "participant"]
    # The timeline is written in batches (a quarter of a second apart at most) after the CDRs.
    wait_for(lambda: timeline_whats(database_url, conf["id"]).count("leave") == 4, 20, "4 leave rows")
    shown = cli(database_url, tmp_path, "show", conf["id"])
    whats = [(e["person"], e["what"]) for e in shown["timeline"]]
    assert len([w for w in whats if w[1] == "join"]) == 4 and len([w for w in whats if w[1] == "leave"]) == 4
    assert not d.tracebacks()
    logs = "\n".join(d.raw + d.stderr)
    codes = [conf["organizer"]["code"], *(p["code"] for p in conf["participants"])]
    assert not [c for c in codes if c in logs]  # access codes never reach the logs (issue 11)
    assert "33611000001" not in logs  # caller numbers are masked


def test_participant_arriving_first_waits_then_joins_the_organizer(daemon_factory: Any, asterisk: AsteriskInstance,
                                                                    database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory()
    d.wait_until_ready()
    early = caller(asterisk, conf["participants"][0]["code"], [("pause", 9000), ("bye", None)], "33611000011")
    d.wait_for_log("conference_member_join", role="participant")
    assert bridged_channels(asterisk) == [0]  # in the conference, but held outside the bridge with MOH
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 4000), ("bye", None)], "33611000012")
    wait_for(lambda: 2 in bridged_channels(asterisk), 20, "the waiting participant joined to the organizer")
    for proc, work in (early, org):
        assert sipp.finish(proc, work).ok


def test_wrong_code_three_times_ends_the_call_and_records_each_attempt(daemon_factory: Any,
                                                                      asterisk: AsteriskInstance,
                                                                      database_url: str, tmp_path: Path) -> None:
    book(database_url, tmp_path, participants=1)
    d = daemon_factory()
    d.wait_until_ready()
    steps: list[tuple[str, object]] = [("pause", 1200)]
    for wrong in ("11111111", "22222222", "33333333"):
        steps += [("dtmf", wrong + "#"), ("pause", 2500)]
    result = sipp.call(asterisk.sip_port, ACCESS, [*steps, ("wait_bye", None)], caller="33611000021")
    assert result.ok, result.stderr
    d.wait_for_log("call_finished")
    attempts = db(database_url, "SELECT reason, caller FROM conference_attempt")
    assert [a["reason"] for a in attempts] == ["wrong_code"] * 3
    assert attempts[0]["caller"] == "+33611000021"


def test_lockout_trips_across_calls_and_lifts_after_its_window(daemon_factory: Any, asterisk: AsteriskInstance,
                                                               database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory(conference_lockout_failures="2", conference_lockout_window_s="15")
    d.wait_until_ready()
    for wrong in ("11111111", "22222222"):
        assert sipp.call(asterisk.sip_port, ACCESS, [("pause", 1200), ("dtmf", wrong + "#"), ("pause", 1000),
                                                     ("bye", None)], caller="33611000031").ok
    # Third call keys the organizer's right code, but is locked out: refused before any code is read.
    result = sipp.finish(*caller(asterisk, conf["organizer"]["code"], [("wait_bye", None)], "33611000031"))
    assert result.ok, result.stderr
    d.wait_for_log("conference_caller_locked_out")
    assert not d.events("conference_member_join")
    attempts = db(database_url, "SELECT reason FROM conference_attempt WHERE caller = '+33611000031' ORDER BY at")
    assert [a["reason"] for a in attempts] == ["wrong_code", "wrong_code", "locked_out"]
    # Another caller number is not affected.
    ok_other = caller(asterisk, conf["participants"][0]["code"], [("pause", 1500), ("bye", None)], "33611000032")
    assert sipp.finish(*ok_other).ok
    wait_for(lambda: len(d.events("conference_member_join")) == 1, 10, "the other caller to join")
    # After the window the first caller gets in again.
    wait_for(lambda: not db(database_url, "SELECT 1 FROM conference_attempt WHERE reason='wrong_code' AND "
                                          "at > now() - interval '15 seconds'"), 30, "the lockout window to pass")
    back = caller(asterisk, conf["organizer"]["code"], [("pause", 1500), ("bye", None)], "33611000031")
    assert sipp.finish(*back).ok
    wait_for(lambda: len(d.events("conference_member_join")) == 2, 10, "the first caller to join after the lockout")


@pytest.mark.parametrize(("start_offset_min", "reason"), [(120, "too_early"), (-180, "over")])
def test_a_code_outside_its_window_is_told_too_early_or_over(daemon_factory: Any, asterisk: AsteriskInstance,
                                                              database_url: str, tmp_path: Path,
                                                              start_offset_min: int, reason: str) -> None:
    conf = book(database_url, tmp_path, participants=1,
                start=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=start_offset_min))
    d = daemon_factory()
    d.wait_until_ready()
    result = sipp.call(asterisk.sip_port, ACCESS, [("pause", 1200), ("dtmf", conf["participants"][0]["code"] + "#"),
                                                   ("wait_bye", None)], caller="33611000041")
    assert result.ok, result.stderr
    line = d.wait_for_log("conference_code_rejected")
    assert line["reason"] == reason


def test_a_locked_room_refuses_newcomers(daemon_factory: Any, asterisk: AsteriskInstance, database_url: str,
                                         tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory()
    d.wait_until_ready()
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 1500), ("dtmf", "*1"), ("pause", 8000),
                                                        ("bye", None)], "33611000051")
    wait_for(lambda: 1 in bridged_channels(asterisk), 15, "the organizer in the room")
    late = caller(asterisk, conf["participants"][0]["code"], [("wait_bye", None)], "33611000052", lead_ms=4000)
    assert sipp.finish(*late).ok
    assert d.wait_for_log("conference_join_refused")["reason"] == "locked"
    assert sipp.finish(*org).ok


def test_star_nine_ends_the_conference_for_everyone(daemon_factory: Any, asterisk: AsteriskInstance,
                                                    database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=2)
    d = daemon_factory()
    d.wait_until_ready()
    parts = [caller(asterisk, p["code"], [("wait_bye", None)], f"3361100006{i}") for i, p in
             enumerate(conf["participants"])]
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 3500), ("dtmf", "*9"), ("wait_bye", None)],
                 "33611000069")
    for proc, work in (*parts, org):
        result = sipp.finish(proc, work)
        assert result.ok, result.stderr  # every caller received a BYE from the engine
    rows = db(database_url, "SELECT ended_at FROM conference WHERE id=$1", uuid.UUID(conf["id"]))
    assert rows[0]["ended_at"] is not None


def _record_bridge_rms(asterisk: AsteriskInstance, seconds: float, name: str, conference_id: str) -> float:
    [bridge] = [b for b in ari(asterisk, "bridges") if b["id"].startswith(f"conf-{conference_id}-")]
    req = urllib.request.Request(f"{asterisk.ari_url}ari/bridges/{bridge['id']}/record?name={name}&format=wav"
                                 f"&maxDurationSeconds={int(seconds)}&ifExists=overwrite", method="POST")
    token = base64.b64encode(f"{asterisk.ari_user}:{asterisk.ari_password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    urllib.request.urlopen(req, timeout=5).close()
    path = asterisk.host_dir / "spool" / "recording" / f"{name}.wav"
    wait_for(lambda: path.exists() and path.stat().st_size > 44 and not _recording_live(asterisk, name),
             seconds + 10, f"bridge recording {name}")
    out = subprocess.run(["sox", str(path), "-n", "stat"], capture_output=True, text=True).stderr
    return float(next(line.split(":")[1] for line in out.splitlines() if line.startswith("RMS     amplitude")))


def _recording_live(asterisk: AsteriskInstance, name: str) -> bool:
    try:
        return ari(asterisk, f"recordings/live/{name}")["state"] == "recording"
    except urllib.error.HTTPError:
        return False


def test_star_six_really_mutes_the_caller_in_the_bridge(daemon_factory: Any, asterisk: AsteriskInstance,
                                                        database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    d = daemon_factory()
    d.wait_until_ready()
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 20000), ("bye", None)], "33611000071")
    wait_for(lambda: 1 in bridged_channels(asterisk), 15, "the organizer in the room")
    # The participant talks (G.711 speech) for the whole call; *6 after the first recording.
    talker = caller(asterisk, conf["participants"][0]["code"],
                    [("audio", 0.1), ("pause", 6000), ("dtmf", "*6"), ("audio", 0.1), ("pause", 8000), ("bye", None)],
                    "33611000072")
    wait_for(lambda: 2 in bridged_channels(asterisk), 15, "the participant in the room")
    loud = _record_bridge_rms(asterisk, 2, "unmuted", conf["id"])
    d.wait_for_log("conference_member_muted", 20, muted=True)
    quiet = _record_bridge_rms(asterisk, 2, "muted", conf["id"])
    assert loud > 0.01 and quiet < loud / 10, (loud, quiet)
    assert sipp.finish(*talker).ok and sipp.finish(*org).ok


def test_ics_booking_in_a_non_utc_zone_and_rebooking_the_same_uid_updates(database_url: str, tmp_path: Path) -> None:
    from tests.unit.test_conference_booking import ICS

    ics = tmp_path / "invite.ics"
    ics.write_bytes(ICS)
    first = cli(database_url, tmp_path, "book", str(ics), "--access-number", ACCESS)
    assert first["created"] is True and first["starts_at"] == "2026-12-01T13:00:00+00:00"
    assert first["organizer"]["email"] == "alice@example.com"
    assert [p["email"] for p in first["participants"]] == ["bob@example.com", "carol@example.com"]
    mails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 3
    bob_mail = next(m.read_text() for m in mails if "bob@example.com" in m.name)
    assert first["participants"][0]["code"] in bob_mail and first["organizer"]["code"] not in bob_mail
    # Nothing of the invitation beyond subject, times and addresses is stored.
    dump = json.dumps(db(database_url, "SELECT * FROM conference"), default=str)
    assert "agenda" not in dump and "Room 4" not in dump
    # Same UID, moved one hour later, Carol replaced by Dave: same conference, Bob keeps his code.
    ics.write_bytes(ICS.replace(b"T140000", b"T150000").replace(b"T150000\nORG", b"T160000\nORG")
                    .replace(b"carol@example.com", b"dave@example.com"))
    second = cli(database_url, tmp_path, "book", str(ics), "--access-number", ACCESS)
    assert second["id"] == first["id"] and second["created"] is False
    assert second["starts_at"] == "2026-12-01T14:00:00+00:00"
    codes = {p["email"]: p["code"] for p in second["participants"]}
    assert codes["bob@example.com"] == first["participants"][0]["code"]
    assert "carol@example.com" not in codes and "dave@example.com" in codes
    assert len(cli(database_url, tmp_path, "show", first["id"])["participants"]) == 2


def test_reissue_invalidates_the_old_code(database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1)
    old = conf["participants"][0]["code"]
    out = cli(database_url, tmp_path, "reissue", conf["id"], "--person", "p0@example.com")
    [new] = out["codes"]
    assert new["code"] != old
    live = db(database_url, "SELECT code FROM conference_code WHERE revoked_at IS NULL")
    assert old not in {r["code"] for r in live} and new["code"] in {r["code"] for r in live}


def test_when_the_organizer_leaves_the_others_are_hung_up_after_the_grace(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    conf = book(database_url, tmp_path, participants=1, leave_grace="2")
    d = daemon_factory()
    d.wait_until_ready()
    part = caller(asterisk, conf["participants"][0]["code"], [("wait_bye", None)], "33611000081")
    org = caller(asterisk, conf["organizer"]["code"], [("pause", 3000), ("bye", None)], "33611000082", lead_ms=2500)
    org_result = sipp.finish(*org)
    part_result = sipp.finish(*part)
    assert org_result.ok and part_result.ok, part_result.stderr
    left = org_result.first("UDP message sent", "BYE")
    cut = part_result.first("UDP message received", "BYE")
    assert 1.5 < (cut - left).total_seconds() < 6
    wait_for(lambda: "leave" in timeline_whats(database_url, conf["id"]), 20, "the participant's leave row")
    timeline = cli(database_url, tmp_path, "show", conf["id"])["timeline"]
    assert ("p0@example.com", "leave", "organizer_left") in [(e["person"], e["what"], e["reason"]) for e in timeline]


def test_code_lookup_records_a_wrong_code_and_counts_failures_in_one_statement(database_url: str) -> None:
    async def run() -> None:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            now = dt.datetime.now(dt.UTC)
            conf, codes, _ = await store.save_booking(
                pool, subject="Weekly", starts_at=now, ends_at=now + dt.timedelta(hours=1),
                organizer="org@example.com", participants=["p0@example.com"], access_numbers=[ACCESS])
            good = next(c for c in codes if c.role == "participant")
            match, by_caller, by_number = await store.find_code(pool, good.code, ACCESS, "+33611000091", 60)
            assert match is not None and match.conference.id == conf.id and match.email == "p0@example.com"
            assert (by_caller, by_number) == (0, 0)  # a right code records nothing
            for n in (1, 2):
                match, by_caller, by_number = await store.find_code(pool, "99999999", ACCESS, "+33611000091", 60)
                assert match is None and (by_caller, by_number) == (n, n)  # this attempt included
            assert await store.recent_failures(pool, "+33611000092", ACCESS, 60) == (0, 2)
            match, *_ = await store.find_code(pool, good.code, "+33900000999", "+33611000092", 60)
            assert match is None  # another number's code
            # Timeline rows of a conference erased meanwhile are skipped, the others written.
            leg = uuid.uuid4()
            await store.record_events(pool, [(conf.id, "p0@example.com", "participant", "join", now, None, leg),
                                             (uuid.uuid4(), "x@example.com", "participant", "join", now, None, leg)])
            assert [e["person"] for e in await store.timeline(pool, conf.id)] == ["p0@example.com"]
        finally:
            await pool.close()

    asyncio.run(run())
    attempts = db(database_url, "SELECT reason, caller FROM conference_attempt ORDER BY at")
    assert [(a["reason"], a["caller"]) for a in attempts] == [("wrong_code", "+33611000091")] * 2 + [
        ("wrong_code", "+33611000092")]
