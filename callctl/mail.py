"""The outbox and the SMTP relay: every e-mail callctl sends (booking messages, voicemail, fraud alerts)
is written atomically as ``<name>.eml`` in ``outbox_dir``, then relayed through ``smtp_relay`` when set.
Core module: features build their messages and hand them here; it imports no feature."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.message
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from callctl.logging import get_logger

log = get_logger("callctl.mail")
SMTP_TIMEOUT_S = 30.0


def file_stamp(now: dt.datetime | None = None) -> str:
    """A UTC timestamp for outbox file names that sorts in sending order."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class Delivery:
    """What became of one batch: the .eml files written, and the problem in one line (None: all written
    and, with a relay, all relayed)."""

    paths: tuple[Path, ...]
    problem: str | None
    unwritten: int = 0  # messages the outbox could not keep


@dataclass(frozen=True)
class Outbox:
    """``directory`` keeps a copy of every message; ``smtp_relay`` (host:port, empty: none) sends them."""

    directory: Path
    smtp_relay: str = ""
    sender: str = ""

    async def deliver(self, mails: Sequence[tuple[str, email.message.EmailMessage]]) -> Delivery:
        """Write each (name, message) to the outbox, then relay them all over one SMTP session.

        The relay is tried even when the outbox cannot be written (the recipient still hears of it);
        a relay failure leaves the messages in the outbox. Either failure is logged once and reported
        in ``Delivery.problem``; nothing here raises."""
        return await asyncio.to_thread(self._deliver, mails)

    def _deliver(self, mails: Sequence[tuple[str, email.message.EmailMessage]]) -> Delivery:
        paths: list[Path] = []
        problem: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name, msg in mails:
                paths.append(self._write(name, msg))
        except OSError as exc:
            problem = f"outbox {self.directory}: {exc.strerror or exc}"
            log.error("mail_not_written", outbox=str(self.directory), error=exc.strerror or str(exc),
                      unwritten=len(mails) - len(paths))
        if self.smtp_relay and mails:
            try:
                self._relay([msg for _, msg in mails])
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                kept = f"kept in {self.directory}" if problem is None else "not kept"
                log.warning("mail_relay_failed", relay=self.smtp_relay, error=str(exc), messages=len(mails),
                            kept_in=str(self.directory) if problem is None else None)
                relay_problem = f"SMTP relay {self.smtp_relay}: {exc} ({kept})"
                problem = relay_problem if problem is None else f"{problem}; {relay_problem}"
        return Delivery(tuple(paths), problem, len(mails) - len(paths))

    def _write(self, name: str, msg: email.message.EmailMessage) -> Path:
        # Written aside then renamed: a reader of the outbox (or a crash) never sees half a message.
        path = self.directory / f"{name}.eml"
        tmp = self.directory / f".{name}.eml.part"
        tmp.write_bytes(bytes(msg))
        tmp.replace(path)
        return path

    def _relay(self, msgs: Sequence[email.message.EmailMessage]) -> None:
        host, _, port = self.smtp_relay.rpartition(":")
        with smtplib.SMTP(host or self.smtp_relay, int(port or 25), timeout=SMTP_TIMEOUT_S) as smtp:
            for msg in msgs:
                smtp.send_message(msg)
