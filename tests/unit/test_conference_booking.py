"""Calendar invitations -> bookings, and the messages that carry the codes."""

from __future__ import annotations

import datetime as dt

import pytest

from callctl.conference.booking import BookingError, Person, messages_for, parse_invitation

ICS = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Google Inc//Google Calendar 70.9054//EN
METHOD:REQUEST
BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:STANDARD
DTSTART:19701025T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:abc123@google.com
SUMMARY:Quarterly review
DTSTART;TZID=Europe/Paris:20261201T140000
DTEND;TZID=Europe/Paris:20261201T150000
ORGANIZER;CN=Alice:mailto:Alice@Example.com
ATTENDEE;CN=Bob;ROLE=REQ-PARTICIPANT:mailto:bob@example.com
ATTENDEE;CN=Reservations:mailto:reservations@conf.example
ATTENDEE;CN=Carol:mailto:carol@example.com
ATTENDEE;CN=Alice:mailto:alice@example.com
DESCRIPTION:Secret agenda that must not be stored
LOCATION:Room 4
END:VEVENT
END:VCALENDAR
"""


def test_invitation_in_paris_time_gives_utc_times_and_participants_without_the_reservation_mailbox() -> None:
    inv = parse_invitation(ICS, "Reservations@conf.example")
    assert inv.uid == "abc123@google.com" and inv.subject == "Quarterly review"
    assert inv.starts_at == dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)  # 14:00 CET
    assert inv.ends_at == dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)
    assert inv.organizer == "alice@example.com"
    assert inv.participants == ("bob@example.com", "carol@example.com")
    assert "agenda" not in repr(inv) and "Room 4" not in repr(inv)  # nothing else is kept


@pytest.mark.parametrize(("start", "end", "starts_at", "ends_at"), [
    # Summer time (CEST, +02:00): a fixed +01:00 offset would put it an hour late.
    ("20260715T140000", "20260715T150000", dt.datetime(2026, 7, 15, 12, 0), dt.datetime(2026, 7, 15, 13, 0)),
    # Across the spring change (29 March 2026, 02:00 CET -> 03:00 CEST): two hours on the wall clock, one real.
    ("20260329T013000", "20260329T033000", dt.datetime(2026, 3, 29, 0, 30), dt.datetime(2026, 3, 29, 1, 30)),
    # Across the autumn change (25 October 2026, 03:00 CEST -> 02:00 CET): two hours on the wall clock, three real.
    ("20261025T013000", "20261025T033000", dt.datetime(2026, 10, 24, 23, 30), dt.datetime(2026, 10, 25, 2, 30)),
], ids=["summer", "spring-change", "autumn-change"])
def test_invitation_times_follow_paris_summer_time_and_its_changes(start: str, end: str, starts_at: dt.datetime,
                                                                   ends_at: dt.datetime) -> None:
    ics = (ICS.replace(b"DTSTART;TZID=Europe/Paris:20261201T140000", f"DTSTART;TZID=Europe/Paris:{start}".encode())
           .replace(b"DTEND;TZID=Europe/Paris:20261201T150000", f"DTEND;TZID=Europe/Paris:{end}".encode()))
    inv = parse_invitation(ics, "reservations@conf.example")
    assert (inv.starts_at, inv.ends_at) == (starts_at.replace(tzinfo=dt.UTC), ends_at.replace(tzinfo=dt.UTC))
    assert inv.starts_at.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b.replace(b"UID:abc123@google.com\n", b""), "has no UID"),
    (lambda b: b.replace(b"DTSTART;TZID=Europe/Paris:20261201T140000", b"DTSTART;VALUE=DATE:20261201"),
     "all-day date"),
    (lambda b: b.replace(b"DTEND;TZID=Europe/Paris:20261201T150000", b"DTEND;TZID=Europe/Paris:20261201T130000"),
     "is not after DTSTART"),
    (lambda b: b"not a calendar", "not a valid iCalendar file"),
])
def test_bad_invitations_are_refused_with_the_file_and_reason(mutate, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BookingError, match=message) as info:
        parse_invitation(mutate(ICS), "reservations@conf.example", "inbox/x.ics")
    assert str(info.value).startswith("inbox/x.ics: ")


def test_each_participant_message_holds_only_their_own_code() -> None:
    people = [Person("alice@example.com", "organizer", "11111111"),
              Person("bob@example.com", "participant", "22222222"),
              Person("carol@example.com", "participant", "33333333")]
    msgs = messages_for(conference_id="c1", subject="Review", starts_at=dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC),
                        ends_at=dt.datetime(2026, 12, 1, 14, tzinfo=dt.UTC), access_numbers=["+33170000000"],
                        people=people, sender="no-reply@example.com")
    bodies = {m["To"]: m.get_content() for m in msgs}
    assert "11111111" in bodies["alice@example.com"] and "*9" in bodies["alice@example.com"]
    assert "22222222" in bodies["bob@example.com"]
    assert "11111111" not in bodies["bob@example.com"] and "33333333" not in bodies["bob@example.com"]
    assert all("+33170000000" in b for b in bodies.values())
