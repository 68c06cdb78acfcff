"""Pure recording rules: retention ages by class, account rules, legal hold, WAV durations."""

from __future__ import annotations

import datetime as dt
import struct

from callctl.recording import rules

END = dt.datetime(2026, 8, 31, 12, 0, tzinfo=dt.UTC)


def candidate(cls: str, *, hold: bool = False, option: bool | None = True, ended: bool = True) -> rules.Candidate:
    return rules.Candidate("r1", cls, END - dt.timedelta(hours=1), END if ended else None, hold, option)


def test_conference_recordings_go_six_calendar_months_after_they_end() -> None:
    assert rules.delete_after("conference", END) == dt.datetime(2027, 2, 28, 12, 0, tzinfo=dt.UTC)
    c = candidate("conference")
    assert not rules.purge_decision(c, dt.datetime(2027, 2, 28, 12, 0, tzinfo=dt.UTC)).delete
    assert rules.purge_decision(c, dt.datetime(2027, 2, 28, 12, 1, tzinfo=dt.UTC)) == rules.PurgeDecision(
        True, "retention_age")


def test_call_recordings_go_after_three_months_or_at_once_when_the_account_option_or_service_ends() -> None:
    just_before = dt.datetime(2026, 11, 30, 11, 59, tzinfo=dt.UTC)
    assert not rules.purge_decision(candidate("call"), just_before).delete
    assert rules.purge_decision(candidate("call"), dt.datetime(2026, 12, 1, tzinfo=dt.UTC)).delete
    assert rules.purge_decision(candidate("call", option=False), END).rule == "account_recording_off"
    assert rules.purge_decision(candidate("call", option=None), END).rule == "account_service_ended"


def test_a_held_recording_is_never_deleted_but_says_which_rule_it_escaped() -> None:
    decision = rules.purge_decision(candidate("call", hold=True, option=False), END)
    assert decision == rules.PurgeDecision(False, "account_recording_off", held=True)


def test_a_recording_whose_end_was_never_seen_ages_from_its_start() -> None:
    c = candidate("call", ended=False)
    assert rules.purge_decision(c, dt.datetime(2026, 11, 30, 11, 1, tzinfo=dt.UTC)).delete


def test_notice_media_per_language_falls_back_to_english() -> None:
    assert rules.notice_media("call", "fr") == ("recording-notice-call-key-9:fr",
                                             "sound:callctl/fr/recording-notice-call-key-9")
    assert rules.notice_media("conference", "de")[0] == "recording-notice-conference:en"


def _wav(fmt: bytes, data_size: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_size) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size) + b"\0" * data_size)


def test_wav_duration_from_the_header_for_gsm_and_pcm() -> None:
    gsm = struct.pack("<HHIIHHHH", 0x31, 1, 8000, 1625, 65, 0, 2, 320)
    assert rules.wav_duration_ms(_wav(gsm, 65 * 50)) == 2000  # 50 blocks of 320 samples
    pcm = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    assert rules.wav_duration_ms(_wav(pcm, 16000)) == 1000
    assert rules.wav_duration_ms(b"not a wav") is None


def test_each_party_of_a_line_call_hears_the_notice_in_their_countrys_language() -> None:
    import types
    import uuid

    from callctl.recording.calls import LineRecorder

    languages = {"FR": "fr", "GB": "en", "BE": "fr"}
    service = types.SimpleNamespace(objection_key="9")
    recorder = LineRecorder(service=service, language_of=languages.get)  # type: ignore[arg-type]
    inbound = recorder.for_call("c", uuid.uuid4(), "FR", "+442079460123", remote_is_caller=True)
    assert (inbound._remote_language, inbound._user_language) == ("en", "fr")
    national = recorder.for_call("c", uuid.uuid4(), "GB", "0612345678", remote_is_caller=False)
    assert (national._remote_language, national._user_language) == ("en", "en")  # national: read in GB
    unknown = recorder.for_call("c", uuid.uuid4(), "BE", "+12025550123", remote_is_caller=True)
    assert (unknown._remote_language, unknown._user_language) == ("fr", "fr")  # US not in the table


def test_the_call_notice_is_the_sound_rendered_for_the_configured_key() -> None:
    assert rules.notice_media("call", "en", "#") == ("recording-notice-call-key-hash:en",
                                                     "sound:callctl/en/recording-notice-call-key-hash")
    assert rules.notice_media("conference", "fr", "#")[1] == "sound:callctl/fr/recording-notice-conference"


def test_render_prompts_says_the_configured_key_in_each_language() -> None:
    from callctl.config import Settings
    from callctl.flows.cli import _load
    from callctl.flows.prompts import render_jobs
    from scripts.devstack import REPO

    plan = _load(REPO / "dialplan", Settings())
    jobs = {(j.prompt, j.language): j.text for j in render_jobs(plan, "#")}
    assert jobs[("recording-notice-call-key-hash", "en")].endswith("press hash at any time.")
    assert jobs[("recording-notice-call-key-hash", "fr")].endswith("tapez dièse à tout moment.")
    assert not [p for p, _ in jobs if p == "recording-notice-call" or "{" in jobs[(p, _)]]
    default = {j.prompt: j.text for j in render_jobs(plan) if j.language == "en"}
    assert "press 9 at any time" in default["recording-notice-call-key-9"]
