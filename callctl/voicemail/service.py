"""Taking voicemail messages: record the caller (RecordingService, so the message is filed, hashed
and kept like every recording), note the message's facts, e-mail it to the box's owner.

A message usually ends with the caller hanging up: the work runs in a task this service owns, so
it is filed and sent even when the call's own task is gone. ``close`` waits for those tasks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.mail import Outbox
from callctl.store import recordings as recordings_store
from callctl.store import voicemail as store
from callctl.voicemail.mail import message_mail

log = get_logger("callctl.voicemail")

CLOSE_WAIT_S = 30.0


@dataclass(frozen=True)
class Box:
    """A voicemail step's box: where messages go and how they are taken."""

    name: str
    email: str
    greeting: tuple[str, ...]
    beep: bool = True
    max_length_s: int = 120
    silence_s: int = 5


class MessageRecorder(Protocol):
    """What voicemail needs of the recording service."""

    async def record_message(self, channel_id: str, *, call_id: str | None, max_s: int, silence_s: int,
                             beep: bool) -> recordings_store.Recording | None: ...


class VoicemailService:
    def __init__(self, pool: Any, recorder: MessageRecorder, mailer: Outbox) -> None:
        self._pool = pool
        self._recorder = recorder
        self._mailer = mailer
        self._tasks: set[asyncio.Task[str]] = set()

    async def take(self, box: Box, *, channel_id: str, call_id: str | None, caller: str, called: str) -> str:
        """Record and deliver one message; 'left', 'empty' (nothing recorded) or 'failed'."""
        task = asyncio.create_task(self._take(box, channel_id, call_id, caller, called), name=f"voicemail-{box.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)

    async def _take(self, box: Box, channel_id: str, call_id: str | None, caller: str, called: str) -> str:
        try:
            rec = await self._recorder.record_message(channel_id, call_id=call_id, max_s=box.max_length_s,
                                                      silence_s=box.silence_s, beep=box.beep)
            if rec is None:
                return "empty"
            await store.add(self._pool, rec.id, box=box.name, caller=caller, called=called, email_to=box.email)
        except StoreError as exc:
            log.error("voicemail_store_failed", box=box.name, error=exc.message)
            return "failed"
        log.info("voicemail_left", box=box.name, recording_id=str(rec.id), duration_ms=rec.duration_ms)
        problem = await self._mail(box, rec, caller, called)
        try:
            await store.mark_emailed(self._pool, rec.id, None if problem else dt.datetime.now(dt.UTC), problem)
        except StoreError as exc:
            log.warning("voicemail_mail_state_not_saved", recording_id=str(rec.id), error=exc.message)
        return "left"

    async def _mail(self, box: Box, rec: recordings_store.Recording, caller: str, called: str) -> str | None:
        if rec.location is None:
            return "no file"
        try:
            audio = await asyncio.to_thread(Path(rec.location).read_bytes)
        except OSError as exc:
            return f"cannot read {rec.location}: {exc.strerror}"
        msg = message_mail(sender=self._mailer.sender, to=box.email, box=box.name, caller=caller, called=called,
                           at=rec.started_at, duration_ms=rec.duration_ms, audio=audio,
                           filename=f"voicemail-{box.name}-{rec.started_at:%Y%m%dT%H%M%SZ}.wav",
                           recording_id=str(rec.id))
        problem = (await self._mailer.deliver([(f"voicemail-{rec.id}", msg)])).problem
        if problem is not None:
            log.warning("voicemail_mail_failed", recording_id=str(rec.id), error=problem)
        return problem


