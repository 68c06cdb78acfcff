"""A voicemail message as an e-mail to the box's owner, the audio attached, written to the outbox
(outbox_dir) and sent through the SMTP relay when one is configured, like booking messages."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.message
import email.utils
import smtplib
from dataclasses import dataclass
from pathlib import Path

from callctl.logging import get_logger

log = get_logger("callctl.voicemail")
SMTP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Mailer:
    outbox_dir: Path
    smtp_relay: str  # host:port; empty: the message is only written to the outbox
    sender: str

    async def deliver(self, msg: email.message.EmailMessage, name: str) -> str | None:
        """Write the message to the outbox, then send it; the problem (None: delivered or queued)."""
        try:
            await asyncio.to_thread(self._write, msg, name)
        except OSError as exc:
            return f"outbox {self.outbox_dir}: {exc.strerror}"
        if not self.smtp_relay:
            return None
        try:
            await asyncio.to_thread(self._send, msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("voicemail_smtp_failed", relay=self.smtp_relay, error=str(exc))
            return f"SMTP relay {self.smtp_relay}: {exc} (kept in {self.outbox_dir})"
        return None

    def _write(self, msg: email.message.EmailMessage, name: str) -> None:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.outbox_dir / f".{name}.eml.part"
        tmp.write_bytes(bytes(msg))
        tmp.replace(self.outbox_dir / f"{name}.eml")

    def _send(self, msg: email.message.EmailMessage) -> None:
        host, _, port = self.smtp_relay.rpartition(":")
        with smtplib.SMTP(host or self.smtp_relay, int(port or 25), timeout=SMTP_TIMEOUT_S) as smtp:
            smtp.send_message(msg)


def message_mail(*, sender: str, to: str, box: str, caller: str, called: str, at: dt.datetime,
                 duration_ms: int | None, audio: bytes, filename: str, recording_id: str) -> email.message.EmailMessage:
    """The e-mail for one message: who called which number when, how long, the audio attached."""
    seconds = round((duration_ms or 0) / 1000)
    length = f"{seconds // 60}:{seconds % 60:02d}"
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Voicemail ({box}) from {caller or 'an unknown number'}, {length}"
    msg["Date"] = email.utils.format_datetime(at)
    msg["X-Callctl-Voicemail"] = recording_id
    msg.set_content(
        f"A message was left in the voicemail box '{box}'.\n\n"
        f"From:   {caller or 'unknown (number withheld)'}\n"
        f"To:     {called}\n"
        f"At:     {at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC\n"
        f"Length: {length}\n\n"
        f"The recording is attached. It is kept 3 months, then deleted (`callctl voicemail delete "
        f"{recording_id}` deletes it sooner).\n")
    msg.add_attachment(audio, maintype="audio", subtype="x-wav", filename=filename)
    return msg
