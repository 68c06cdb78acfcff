"""A voicemail message as an e-mail to the box's owner, the audio attached; callctl.mail.Outbox writes it to
the outbox (outbox_dir) and sends it through the SMTP relay when one is configured, like booking messages."""

from __future__ import annotations

import datetime as dt
import email.message
import email.utils


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
