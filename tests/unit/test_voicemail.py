"""Voicemail without Asterisk: the step's options are checked, a message is filed and e-mailed even
when the caller's task is gone (most callers end a message by hanging up), SMTP trouble is kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import uuid
from pathlib import Path
from typing import Any

import pytest

from callctl.mail import Outbox
from callctl.store.recordings import Recording
from callctl.voicemail import steps as voicemail_steps
from callctl.voicemail.service import Box, VoicemailService
from tests.unit.test_flows_loader import one, problems

assert voicemail_steps.DEFAULT_GREETING  # registers the step type


class FakeDb:
    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append((sql, args))
        return "OK"


class SlowRecorder:
    """Records for as long as ``release`` is not set, then 'files' a WAV under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def record_message(self, channel_id: str, *, call_id: str | None, max_s: int, silence_s: int,
                             beep: bool) -> Recording | None:
        self.started.set()
        await self.release.wait()
        rid = uuid.uuid4()
        path = self.folder / f"{rid}.WAV"
        path.write_bytes(b"RIFF....WAVEfake audio")
        now = dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
        return Recording(id=rid, source="voicemail", conference_id=None, call_id=None, account_id=None,
                         asterisk_name=f"callctl-{rid}", bridge_id=channel_id, format="wav49", state="stored",
                         started_at=now, ended_at=now, duration_ms=42000, size_bytes=22, sha256="0" * 64,
                         location=str(path), retention_class="voicemail", legal_hold=False, hold_reason=None,
                         error=None)


BOX = Box(name="support", email="support@example.com", greeting=("sound:vm-intro",))


async def test_a_message_is_filed_and_emailed_after_the_callers_task_is_cancelled(tmp_path: Path) -> None:
    recorder = SlowRecorder(tmp_path)
    db = FakeDb()
    outbox = tmp_path / "outbox"
    service = VoicemailService(db, recorder, Outbox(outbox, "", "callctl <no-reply@example.com>"))
    caller_task = asyncio.create_task(service.take(BOX, channel_id="chan-1", call_id=None, caller="+33612345678",
                                                   called="+33900000003"))
    await recorder.started.wait()
    caller_task.cancel()  # the call's task goes away (hang-up), the message does not
    recorder.release.set()
    await service.close()
    [mail_file] = list(outbox.glob("voicemail-*.eml"))
    mail = email.message_from_bytes(mail_file.read_bytes(), policy=email.policy.default)
    assert mail["To"] == "support@example.com"
    assert mail["Subject"] == "Voicemail (support) from +33612345678, 0:42"
    [audio] = list(mail.iter_attachments())
    assert audio.get_content_type() == "audio/x-wav" and audio.get_content() == b"RIFF....WAVEfake audio"
    inserted = [args for sql, args in db.statements if sql.startswith("INSERT INTO voicemail_message")]
    assert inserted and inserted[0][1:] == ("support", "+33612345678", "+33900000003", "support@example.com")
    emailed = [args for sql, args in db.statements if sql.startswith("UPDATE voicemail_message")]
    assert emailed[0][1] is not None and emailed[0][2] is None


async def test_an_smtp_failure_keeps_the_mail_in_the_outbox_and_says_so(tmp_path: Path) -> None:
    recorder = SlowRecorder(tmp_path)
    recorder.release.set()
    db = FakeDb()
    service = VoicemailService(db, recorder, Outbox(tmp_path / "outbox", "127.0.0.1:1", "callctl <x@example.com>"))
    status = await service.take(BOX, channel_id="chan-1", call_id=None, caller="", called="+33900000003")
    assert status == "left"
    assert list((tmp_path / "outbox").glob("voicemail-*.eml"))
    [(_, args)] = [s for s in db.statements if s[0].startswith("UPDATE voicemail_message")]
    assert args[1] is None and "SMTP relay 127.0.0.1:1" in args[2]


def test_voicemail_options_are_checked(tmp_path: Path) -> None:
    found = problems(tmp_path, {"flows/main.yaml": """\
        flows:
          main:
            - voicemail: {box: "sup port", email: nobody, max_length: 5000, silence: -1, greting: x}
        """})
    one(found, "voicemail box 'sup port' is not valid")
    one(found, "voicemail email 'nobody' is not valid (an e-mail address)")
    one(found, "max_length (seconds) must be a whole number from 5 to 600")
    one(found, "silence (seconds) must be a whole number from 0 to 60")
    one(found, "unknown option 'greting' for 'voicemail' (did you mean 'greeting'?")


@pytest.fixture(autouse=True)
def _unbound() -> None:
    voicemail_steps.bind(None)
