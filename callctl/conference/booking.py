"""Bookings from calendar invitations (.ics) and the messages that carry the codes (pure).

From an invitation only SUMMARY, DTSTART/DTEND (converted to UTC from their time zone), ORGANIZER
and ATTENDEE addresses are kept, plus the UID so that re-booking updates the same conference;
the invitation itself is not stored (BRIEF section 1). The reservation mailbox is not a participant.
"""

from __future__ import annotations

import datetime as dt
import email.message
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

import icalendar

from callctl.errors import BookingError as BookingError  # in the one tree (callctl.errors)


@dataclass(frozen=True)
class Invitation:
    uid: str
    subject: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    organizer: str
    participants: tuple[str, ...]


def _address(value: object) -> str:
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text.strip().lower()


def _utc(value: object, where: str, field: str) -> dt.datetime:
    moment = getattr(value, "dt", None)
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is None:
            raise BookingError(f"{where}: {field} has no time zone (floating time); add TZID or use UTC")
        return moment.astimezone(dt.UTC)
    if isinstance(moment, dt.date):
        raise BookingError(f"{where}: {field} is an all-day date; a conference needs a start time")
    raise BookingError(f"{where}: {field} is missing")


def parse_invitation(data: bytes, reservation_address: str, where: str = "invitation") -> Invitation:
    try:
        cal = icalendar.Calendar.from_ical(data)
    except ValueError as exc:
        raise BookingError(f"{where}: not a valid iCalendar file: {exc}") from None
    events = [c for c in cal.walk("VEVENT")]
    if len(events) != 1:
        raise BookingError(f"{where}: expected exactly one VEVENT, found {len(events)}")
    ev = events[0]
    uid = str(ev.get("UID") or "").strip()
    if not uid:
        raise BookingError(f"{where}: the event has no UID")
    starts_at = _utc(ev.get("DTSTART"), where, "DTSTART")
    if ev.get("DTEND") is not None:
        ends_at = _utc(ev.get("DTEND"), where, "DTEND")
    elif ev.get("DURATION") is not None:
        ends_at = starts_at + ev.get("DURATION").dt
    else:
        raise BookingError(f"{where}: the event has neither DTEND nor DURATION")
    if ends_at <= starts_at:
        raise BookingError(f"{where}: DTEND {ends_at.isoformat()} is not after DTSTART {starts_at.isoformat()}")
    if ev.get("ORGANIZER") is None:
        raise BookingError(f"{where}: the event has no ORGANIZER")
    organizer = _address(ev.get("ORGANIZER"))
    reservation = reservation_address.strip().lower()
    attendees = ev.get("ATTENDEE") or []
    if not isinstance(attendees, list):
        attendees = [attendees]
    participants: list[str] = []
    for attendee in attendees:
        addr = _address(attendee)
        if addr and addr not in (reservation, organizer) and addr not in participants:
            participants.append(addr)
    return Invitation(uid, str(ev.get("SUMMARY") or "Conference").strip(), starts_at, ends_at, organizer,
                      tuple(participants))


@dataclass(frozen=True)
class Person:
    email: str
    role: str
    code: str


def messages_for(*, conference_id: str, subject: str, starts_at: dt.datetime, ends_at: dt.datetime,
                 access_numbers: list[str], people: list[Person], sender: str,
                 links: Mapping[str, str] | None = None) -> list[email.message.EmailMessage]:
    """One message per person: the organizer's with the organizer code, each participant's with
    only their own code; with ``links`` (email -> URL), each with its own Online Space link."""
    out = []
    when = f"{starts_at.astimezone(dt.UTC):%A %d %B %Y, %H:%M} - {ends_at.astimezone(dt.UTC):%H:%M} UTC"
    numbers = "\n".join(f"  {n}" for n in access_numbers)
    for p in people:
        msg = email.message.EmailMessage()
        msg["From"] = sender
        msg["To"] = p.email
        msg["Subject"] = f"Dial-in details: {subject}"
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = email.utils.make_msgid(domain="callctl.invalid")
        msg["X-Callctl-Conference"] = conference_id
        role_line = ("You are the organizer. Your organizer code starts the conference; keep it to yourself."
                     if p.role == "organizer" else
                     "This code is personal: do not share it. Ask the organizer for a new one if you think it leaked.")
        link = (links or {}).get(p.email)
        space = (f"Your personal link to the conference's Online Space (follow the call, share documents and "
                 f"messages{', steer the call' if p.role == 'organizer' else ''}):\n\n  {link}\n\n"
                 "This link is strictly confidential and for your use only: do not forward it.\n\n"
                 if link else "")
        msg.set_content(
            f"{subject}\n{when}\n\nDial one of these numbers:\n{numbers}\n\n"
            f"then enter your personal code followed by #:\n\n  {p.code}\n\n{role_line}\n\n{space}"
            "In the conference: *6 mute/unmute, *# how many are present, *0 help.\n"
            + ("Organizer keys: *1 lock/unlock, *2 mute all participants, *3 recording, *9 end for everyone.\n"
               if p.role == "organizer" else ""))
        out.append(msg)
    return out
