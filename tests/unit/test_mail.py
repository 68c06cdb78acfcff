"""The one outbox writer and SMTP relay (callctl/mail.py) that booking, voicemail and fraud alerts share."""

from __future__ import annotations

import email.message
import smtplib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callctl.mail import Outbox


def _msg(to: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "callctl <no-reply@example.com>"
    msg["To"] = to
    msg["Subject"] = "hello"
    msg.set_content("body\n")
    return msg


class FakeSmtp:
    sent: list[str] = []
    relays: list[tuple[str, int]] = []

    def __init__(self, host: str, port: int, timeout: float) -> None:
        FakeSmtp.relays.append((host, port))

    def __enter__(self) -> FakeSmtp:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send_message(self, msg: email.message.EmailMessage) -> None:
        FakeSmtp.sent.append(str(msg["To"]))


async def test_each_message_is_written_whole_under_its_name(tmp_path: Path) -> None:
    delivery = await Outbox(tmp_path / "outbox").deliver([("a", _msg("a@example.com")), ("b", _msg("b@example.com"))])
    assert delivery.problem is None and delivery.unwritten == 0
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["a.eml", "b.eml"]  # no .part left behind
    assert b"To: b@example.com" in (tmp_path / "outbox" / "b.eml").read_bytes()


async def test_a_relay_failure_is_logged_once_reported_and_the_messages_kept(tmp_path: Path) -> None:
    with capture_logs() as logs:
        delivery = await Outbox(tmp_path, "127.0.0.1:1").deliver([("a", _msg("a@example.com")),
                                                                   ("b", _msg("b@example.com"))])
    assert delivery.problem is not None
    assert delivery.problem.startswith("SMTP relay 127.0.0.1:1: ") and f"kept in {tmp_path}" in delivery.problem
    assert [e["event"] for e in logs] == ["mail_relay_failed"]
    assert len(delivery.paths) == 2 and all(p.exists() for p in delivery.paths)


async def test_a_bad_relay_port_is_reported_not_raised(tmp_path: Path) -> None:
    delivery = await Outbox(tmp_path, "localhost:smtp").deliver([("a", _msg("a@example.com"))])
    assert delivery.problem is not None and delivery.problem.startswith("SMTP relay localhost:smtp: ")
    assert (tmp_path / "a.eml").exists()


async def test_an_unwritable_outbox_is_reported_and_the_relay_still_sends(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtplib, "SMTP", FakeSmtp)
    FakeSmtp.sent = []
    (tmp_path / "outbox").write_text("a file where the directory should be")
    with capture_logs() as logs:
        delivery = await Outbox(tmp_path / "outbox", "relay.example.com:25").deliver([("a", _msg("a@example.com"))])
    assert delivery.unwritten == 1 and delivery.paths == ()
    assert delivery.problem is not None and delivery.problem.startswith(f"outbox {tmp_path / 'outbox'}: ")
    assert [e["event"] for e in logs] == ["mail_not_written"]
    assert FakeSmtp.sent == ["a@example.com"]


async def test_messages_go_through_the_relay_when_one_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtplib, "SMTP", FakeSmtp)
    FakeSmtp.sent, FakeSmtp.relays = [], []
    delivery = await Outbox(tmp_path, "relay.example.com:2525").deliver([("a", _msg("a@example.com"))])
    assert delivery.problem is None and FakeSmtp.sent == ["a@example.com"]
    assert FakeSmtp.relays == [("relay.example.com", 2525)]
