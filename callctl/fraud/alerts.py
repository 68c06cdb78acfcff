"""Fraud alert e-mails through the outbox (a .eml file per message, always) and the SMTP relay (when set),
the same path as booking messages; sending never blocks the event loop or a call."""

from __future__ import annotations

import asyncio
import email.message
import email.utils
from collections.abc import Sequence
from pathlib import Path

from callctl.logging import get_logger
from callctl.mail import Delivery, Outbox, file_stamp

log = get_logger("callctl.fraud")


def alert_message(*, sender: str, to: Sequence[str], account_id: str, level: str, rule: str,
                  reason: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="callctl.invalid")
    msg["X-Callctl-Account"] = account_id
    msg["X-Callctl-Fraud-Rule"] = rule
    title = "outbound calls suspended" if level == "suspended" else "spending warning"
    msg["Subject"] = f"[callctl] Account {account_id}: {title} ({rule})"
    action = ("Outbound calls of this account are suspended until an operator lifts the suspension "
              f"(callctl fraud release {account_id} --by NAME)." if level == "suspended" else
              "Outbound calls continue; they will be suspended if the limit is reached.")
    msg.set_content(f"{reason}.\n\n{action}\n\nIf you do not recognise these calls, your SIP credentials may be "
                    "in use by someone else: change the passwords of your phones and tell your operator.\n")
    return msg


class Mailer:
    """Sends each alert to the account's contact and the operator through the outbox (and relay)."""

    def __init__(self, outbox_dir: Path, smtp_relay: str, sender: str, operator_email: str = "") -> None:
        self._outbox = Outbox(outbox_dir, smtp_relay, sender)
        self._operator = operator_email
        self._tasks: set[asyncio.Task[Delivery]] = set()

    def send(self, account_id: str, contact: str | None, *, level: str, rule: str, reason: str) -> None:
        """Queue the alert (sync: called from the admission path, which must not wait on SMTP)."""
        to = [a for a in (contact, self._operator) if a]
        if not to:
            log.info("fraud_alert_without_recipient", account_id=account_id, rule=rule)
            return
        msg = alert_message(sender=self._outbox.sender, to=to, account_id=account_id, level=level, rule=rule,
                            reason=reason)
        name = f"{file_stamp()}-fraud-{account_id}-{rule}"
        task = asyncio.get_running_loop().create_task(self._outbox.deliver([(name, msg)]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_for_sent(self) -> None:
        """For shutdown and tests: every queued alert written (and relayed, or the failure logged)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
