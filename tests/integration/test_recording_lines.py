"""Automatic recording of business-line calls on a real Asterisk (realtime SIP users): both parties
hear the notice (each in their language), the remote party's objection key (9) stops the recording
and discards it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, free_port_pair
from tests.integration import test_lines_calls as lines
from tests.integration.test_lines_cli import cli, db
from tests.integration.test_recording import sox_stat
from tests.support import sipp
from tests.support.asterisk import render_prompts

pytestmark = pytest.mark.integration

asterisk = lines.asterisk  # this module's Asterisk reads SIP users from the test's database


def recorded_line_user(database_url: str) -> dict[str, Any]:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR", "--recording")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", lines.DID)
    user["account_id"] = acc["id"]
    return user


def test_the_remote_party_objects_with_9_and_the_recording_is_discarded_another_call_is_kept(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    render_prompts(asterisk)
    user = recorded_line_user(database_url)
    port = free_port_pair()
    lines.phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "answer", local_ip=lines.PHONE_IP, calls=2)
    d = daemon_factory()
    d.wait_until_ready()
    # The notice plays once both are bridged (~5 s); the caller talks, then presses 9.
    objecting = sipp.call(asterisk.sip_port, lines.DID, [("audio", 7.0), ("audio", 7.0), ("dtmf", "9"),
                                                         ("pause", 1500), ("bye", None)], caller="+442079460123")
    assert objecting.ok, objecting.stderr
    objection = d.wait_for_log("recording_discarded", 20)
    assert objection["rule"] == "objection"
    kept = sipp.call(asterisk.sip_port, lines.DID, [("audio", 7.0), ("audio", 7.0), ("bye", None)],
                     caller="0612345679")
    assert kept.ok, kept.stderr
    filed = d.wait_for_log("recording_filed", 20)
    assert sipp.finish(*phone).ok

    rows = {str(r["id"]): r for r in db(database_url, "SELECT * FROM recording ORDER BY started_at")}
    discarded, stored = rows[objection["recording_id"]], rows[filed["recording_id"]]
    assert discarded["state"] == "discarded" and discarded["location"] is None and discarded["sha256"] is None
    assert discarded["account_id"] == uuid.UUID(user["account_id"]) and discarded["retention_class"] == "call"
    notices = db(database_url, "SELECT party, prompt, objected_at, objection_key FROM recording_notice "
                               "WHERE recording_id = $1 ORDER BY party", discarded["id"])
    # Each in their language: the British caller in English, the user of a French account in French.
    assert [(n["party"], n["prompt"]) for n in notices] == [("remote", "recording-notice-call-key-9:en"),
                                                            ("user", "recording-notice-call-key-9:fr")]
    assert notices[0]["objection_key"] == "9" and notices[0]["objected_at"] is not None
    assert notices[1]["objected_at"] is None
    [audit] = db(database_url, "SELECT action, rule FROM recording_audit WHERE recording_id = $1", discarded["id"])
    assert (audit["action"], audit["rule"]) == ("discarded", "objection")
    # Nothing of the discarded call is left anywhere: not in the engine's folder, not in Asterisk's spool.
    spool = asterisk.host_dir / "spool" / "recording"
    assert not [p for p in spool.iterdir() if objection["recording_id"] in p.name]
    assert stored["state"] == "stored"
    folder = Path(stored["location"]).parent
    assert [p.name for p in folder.iterdir()] == [f"{stored['id']}.WAV"]
    assert sox_stat(Path(stored["location"]))["RMS     amplitude"] > 0.01
    assert not d.tracebacks()


def test_the_configured_objection_key_is_the_one_the_notice_says_and_recordings_go_to_the_configured_folder(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    render_prompts(asterisk, objection_key="#")
    for language in ("en", "fr"):
        assert (asterisk.sounds_dir / "callctl" / language / "recording-notice-call-key-hash.wav").stat().st_size > 44
    user = recorded_line_user(database_url)
    port = free_port_pair()
    lines.phone_at(database_url, user, port)
    phone = sipp.start_far_end(port, "answer", local_ip=lines.PHONE_IP, calls=2)
    folder = tmp_path / "archive"
    d = daemon_factory(recording_objection_key="#", recordings_dir=str(folder))
    d.wait_until_ready()
    # 9 is an ordinary key now: the recording goes on; # objects.
    objecting = sipp.call(asterisk.sip_port, lines.DID, [("audio", 7.0), ("dtmf", "9"), ("pause", 1500),
                                                         ("dtmf", "#"), ("pause", 1500), ("bye", None)],
                          caller="+442079460123")
    assert objecting.ok, objecting.stderr
    objection = d.wait_for_log("recording_discarded", 20)
    kept = sipp.call(asterisk.sip_port, lines.DID, [("audio", 7.0), ("bye", None)], caller="0612345679")
    assert kept.ok, kept.stderr
    filed = d.wait_for_log("recording_filed", 20)
    assert sipp.finish(*phone).ok

    notices = db(database_url, "SELECT party, prompt, objection_key FROM recording_notice WHERE recording_id = $1 "
                               "ORDER BY party", uuid.UUID(objection["recording_id"]))
    assert [(n["party"], n["prompt"], n["objection_key"]) for n in notices] == [
        ("remote", "recording-notice-call-key-hash:en", "#"), ("user", "recording-notice-call-key-hash:fr", None)]
    [stored] = db(database_url, "SELECT state, location FROM recording WHERE id = $1", uuid.UUID(filed["recording_id"]))
    assert stored["state"] == "stored" and Path(stored["location"]) == folder / f"{filed['recording_id']}.WAV"
    assert Path(stored["location"]).is_file()
    assert not d.tracebacks()
