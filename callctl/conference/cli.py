"""`callctl conference create|book|list|show|cancel|reissue`: bookings and codes from the command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import email.message
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from callctl.conference.booking import BookingError, Person, messages_for, parse_invitation
from callctl.conference.links import link_state, link_url, public_base
from callctl.config import Settings
from callctl.errors import CallctlError
from callctl.mail import Outbox, file_stamp
from callctl.numbers import e164_or_none
from callctl.store import conferences as store
from callctl.store import space as space_store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    conf = sub.add_parser("conference", parents=[common], help="book and manage dial-in conferences")
    csub = conf.add_subparsers(dest="conference_command", metavar="ACTION", required=True)

    create = csub.add_parser("create", parents=[common], help="book a conference; prints JSON with the codes")
    create.add_argument("--subject", required=True)
    create.add_argument("--start", required=True, help="ISO 8601 with offset, e.g. 2026-12-01T14:00:00+01:00")
    create.add_argument("--duration", type=int, required=True, help="minutes")
    create.add_argument("--organizer", required=True, metavar="EMAIL")
    create.add_argument("--participant", action="append", default=[], metavar="EMAIL")
    _booking_options(create)
    create.set_defaults(func=_create)

    book = csub.add_parser("book", parents=[common], help="book (or update) from a calendar invitation")
    book.add_argument("file", type=Path, metavar="FILE.ics")
    _booking_options(book)
    book.set_defaults(func=_book)

    csub.add_parser("list", parents=[common], help="all conferences").set_defaults(func=_list)
    show = csub.add_parser("show", parents=[common], help="a conference, its codes and its participant timeline")
    show.add_argument("id", type=uuid.UUID)
    show.set_defaults(func=_show)
    cancel = csub.add_parser("cancel", parents=[common], help="cancel: its codes stop working")
    cancel.add_argument("id", type=uuid.UUID)
    cancel.set_defaults(func=_cancel)
    reissue = csub.add_parser("reissue", parents=[common], help="new codes (old ones stop working at once)")
    reissue.add_argument("id", type=uuid.UUID)
    reissue.add_argument("--person", metavar="EMAIL", help="only this person's code (default: everyone's)")
    reissue.set_defaults(func=_reissue)
    link = csub.add_parser("link", parents=[common],
                           help="a person's Online Space link: its state, or a new one (--reissue, mailed)")
    link.add_argument("id", type=uuid.UUID)
    link.add_argument("--email", required=True, metavar="EMAIL")
    link.add_argument("--reissue", action="store_true",
                      help="issue a new link (the old one stops opening) and write the person's message again")
    link.set_defaults(func=_link)
    record = csub.add_parser("record", parents=[common],
                             help="start or stop recording a live conference (everyone hears the notice first)")
    record.add_argument("id", type=uuid.UUID)
    which = record.add_mutually_exclusive_group(required=True)
    which.add_argument("--start", action="store_true")
    which.add_argument("--stop", action="store_true")
    record.add_argument("--wait", type=int, default=60, metavar="SECONDS",
                        help="how long to wait for the running engine to act (default 60)")
    record.set_defaults(func=_record)


def _booking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--access-number", action="append", default=[], metavar="E164")
    p.add_argument("--language", choices=("en", "fr"), default="en")
    p.add_argument("--max-members", type=int, default=50)
    p.add_argument("--leave-policy", choices=("end", "continue"), default="end",
                   help="when the organizer leaves: end the conference after a grace, or continue")
    p.add_argument("--leave-grace", type=int, default=60, metavar="SECONDS",
                   help="with --leave-policy end: how long the others stay after the organizer left (default 60)")


def _access_numbers(args: argparse.Namespace, settings: Settings) -> list[str]:
    raw = args.access_number or [n for n in settings.conference_access_numbers.split(",") if n.strip()]
    if not raw:
        raise CallctlError("no access number: pass --access-number E164 or set conference_access_numbers")
    numbers = [e164_or_none(n, None) for n in raw]
    bad = [n.strip() for n, e164 in zip(raw, numbers, strict=True) if e164 is None]
    if bad:
        raise CallctlError(f"access numbers must be E.164 (+CC...): {', '.join(bad)}")
    return [n for n in numbers if n is not None]


def _run(coro: Any) -> int:
    return int(asyncio.run(coro))


async def _with_pool(settings: Settings, work: Any) -> Any:
    from callctl.store.db import connect_pool

    pool = await connect_pool(settings.database_url)
    try:
        return await work(pool)
    finally:
        await pool.close()


def _summary(conf: store.Conference, codes: list[store.Code], created: bool | None = None,
             links: dict[str, str] | None = None) -> dict[str, Any]:
    def person(c: store.Code) -> dict[str, Any]:
        return {"email": c.email, "code": c.code, **({"link": links[c.email]} if links and c.email in links else {})}

    out: dict[str, Any] = {
        "id": str(conf.id), "subject": conf.subject,
        "starts_at": conf.starts_at.isoformat(), "ends_at": conf.ends_at.isoformat(),
        "access_numbers": list(conf.access_numbers), "language": conf.language,
        "organizer": next((person(c) for c in codes if c.role == "organizer"), None),
        "participants": [person(c) for c in codes if c.role == "participant"],
        "status": conf.status,
    }
    if created is not None:
        out["created"] = created
    return out


async def _deliver(settings: Settings, conf: store.Conference, codes: list[store.Code],
                   links: dict[str, str] | None = None) -> list[str]:
    people = [Person(c.email, c.role, c.code) for c in codes]
    msgs = messages_for(conference_id=str(conf.id), subject=conf.subject, starts_at=conf.starts_at,
                        ends_at=conf.ends_at, access_numbers=list(conf.access_numbers), people=people,
                        sender=settings.mail_from, links=links)
    return await write_outbox(settings, msgs)


async def _new_links(pool: Any, settings: Settings, conference_id: uuid.UUID,
                     email: str | None = None) -> dict[str, str]:
    """New Online Space links (email -> URL; the old ones stop opening); none when the space is off.
    A token exists in clear only here, on its way into the message and the command's output."""
    if not settings.space_listen:
        return {}
    tokens = await space_store.issue_links(pool, conference_id, email)
    base = public_base(settings.space_public_url, settings.space_listen)
    return {who: link_url(base, token) for who, token in tokens.items()}


async def write_outbox(settings: Settings, msgs: list[email.message.EmailMessage]) -> list[str]:
    """Each message into the outbox (named <stamp>-<conference>-<recipient>.eml), then the SMTP relay."""
    stamp = file_stamp()
    delivery = await Outbox(settings.outbox_dir, settings.smtp_relay).deliver(
        [(f"{stamp}-{msg['X-Callctl-Conference']}-{msg['To']}", msg) for msg in msgs])
    if delivery.unwritten:
        raise CallctlError(delivery.problem or "outbox: not written")
    if delivery.problem is not None:
        print(f"callctl: warning: {delivery.problem}", file=sys.stderr)
    return [str(p) for p in delivery.paths]


def _create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        start = dt.datetime.fromisoformat(args.start)
    except ValueError:
        raise CallctlError(f"--start {args.start!r} is not ISO 8601 (e.g. 2026-12-01T14:00:00+01:00)") from None
    if start.tzinfo is None:
        raise CallctlError(f"--start {args.start!r} needs a UTC offset (e.g. +01:00 or Z)")
    if args.duration <= 0:
        raise CallctlError("--duration must be a positive number of minutes")
    numbers = _access_numbers(args, settings)

    return _save(args, settings, subject=args.subject, starts_at=start.astimezone(dt.UTC),
                 ends_at=start.astimezone(dt.UTC) + dt.timedelta(minutes=args.duration), organizer=args.organizer,
                 participants=args.participant, access_numbers=numbers)


def _book(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise CallctlError(f"{args.file}: cannot read: {exc.strerror}") from None
    inv = parse_invitation(data, settings.reservation_address, str(args.file))
    if not inv.participants:
        raise BookingError(f"{args.file}: no participant besides the organizer and the reservation address")
    numbers = _access_numbers(args, settings)

    return _save(args, settings, subject=inv.subject, starts_at=inv.starts_at, ends_at=inv.ends_at,
                 organizer=inv.organizer, participants=list(inv.participants), access_numbers=numbers, ics_uid=inv.uid)


def _save(args: argparse.Namespace, settings: Settings, **booking: Any) -> int:
    """Save a booking (create or update), write the messages, print the JSON summary."""

    async def work(pool: Any) -> int:
        conf, codes, created = await store.save_booking(
            pool, language=args.language, code_length=settings.conference_code_length,
            max_members=args.max_members, organizer_leave_policy=args.leave_policy,
            organizer_leave_grace_s=args.leave_grace, **booking)
        # Every message is written again, so everyone gets a new link (only hashes are kept).
        links = await _new_links(pool, settings, conf.id)
        out = _summary(conf, codes, created, links)
        out["messages"] = await _deliver(settings, conf, codes, links)
        print(json.dumps(out, indent=2))
        return 0

    return _run(_with_pool(settings, work))


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> int:
        for conf in await store.list_all(pool):
            print(f"{conf.id}  {conf.starts_at:%Y-%m-%d %H:%M}Z  {conf.status:9}  {conf.subject}")
        return 0

    return _run(_with_pool(settings, work))


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> int:
        conf = await store.get(pool, args.id)
        if conf is None:
            raise CallctlError(f"no conference {args.id}")
        out = _summary(conf, await store.live_codes(pool, conf.id))
        out["timeline"] = [{**row, "at": row["at"].isoformat(), "leg_id": str(row["leg_id"])}
                           for row in await store.timeline(pool, conf.id)]
        await _mark_organizer_paid(pool, out["timeline"])
        print(json.dumps(out, indent=2, default=str))
        return 0

    return _run(_with_pool(settings, work))


async def _mark_organizer_paid(pool: Any, timeline: list[dict[str, Any]]) -> None:
    """Each event says whether its leg was organizer-paid (drew a free-minutes pool, issue 10)."""
    from callctl.store import minutes as minutes_store

    paid = await minutes_store.paid_leg_ids(pool, [uuid.UUID(e["leg_id"]) for e in timeline if e["leg_id"] != "None"])
    for event in timeline:
        event["organizer_paid"] = event["leg_id"] in {str(x) for x in paid}


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> int:
        if not await store.cancel(pool, args.id):
            raise CallctlError(f"no conference {args.id} to cancel (unknown or already cancelled)")
        await space_store.revoke_links(pool, args.id)
        print(json.dumps({"id": str(args.id), "status": "cancelled"}))
        return 0

    return _run(_with_pool(settings, work))


def _reissue(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> int:
        conf = await store.get(pool, args.id)
        if conf is None:
            raise CallctlError(f"no conference {args.id}")
        codes = await store.reissue(pool, conf.id, args.person, settings.conference_code_length)
        links = await _new_links(pool, settings, conf.id, args.person)
        paths = await _deliver(settings, conf, codes, links)
        print(json.dumps({"id": str(conf.id), "codes": [{"email": c.email, "role": c.role, "code": c.code,
                                                         **({"link": links[c.email]} if c.email in links else {})}
                                                        for c in codes], "messages": paths}, indent=2))
        return 0

    return _run(_with_pool(settings, work))


def _link(args: argparse.Namespace, settings: Settings) -> int:
    """Shows a link's state (the link itself cannot be shown again: only its hash is kept) or re-issues it."""
    email = args.email.strip().lower()

    async def work(pool: Any) -> int:
        conf = await store.get(pool, args.id)
        if conf is None:
            raise CallctlError(f"no conference {args.id}")
        code = next((c for c in await store.live_codes(pool, conf.id) if c.email == email), None)
        if code is None:
            raise CallctlError(f"conference {conf.id}: {email} is not invited (no live code); "
                               "see `callctl conference show ID`")
        if not settings.space_listen:
            raise CallctlError("the Online Space is off (space_listen is empty): no links to show or issue")
        out: dict[str, Any] = {"id": str(conf.id), "email": email, "role": code.role}
        if args.reissue:
            links = await _new_links(pool, settings, conf.id, email)
            out["link"] = links[email]
            out["messages"] = await _deliver(settings, conf, [code], links)
        status = await space_store.link_status(pool, conf.id, email)
        if status is not None:
            state = link_state(revoked_at=status["revoked_at"], cancelled_at=conf.cancelled_at, ends_at=conf.ends_at,
                               valid_after_s=settings.space_link_valid_after_s, now=dt.datetime.now(dt.UTC))
            valid_until = conf.ends_at + dt.timedelta(seconds=settings.space_link_valid_after_s)
            out.update(state=state, issued_at=status["issued_at"].isoformat(), valid_until=valid_until.isoformat(),
                       last_opened_at=status["last_opened_at"].isoformat() if status["last_opened_at"] else None)
        else:
            out["state"] = "none"
        if not args.reissue:
            out["note"] = ("links are stored only as hashes and cannot be shown again: "
                           "--reissue sends a new one (the old one stops opening)")
        print(json.dumps(out, indent=2))
        return 0

    return _run(_with_pool(settings, work))


_RECORD_ANSWERS = {  # why a recording command was not carried out, for the one error line
    "no_live_room": "no live room (nobody is in the call)",
    "owner_unreachable": "the node holding the room ({owner}) did not answer; nothing was changed: try again "
                         "(once its lease has run out, another node takes the room over)",
    "owner_lost": "the node holding the room ({owner}) stopped while doing it: see `callctl conference show` "
                  "before trying again",
}


def _record(args: argparse.Namespace, settings: Settings) -> int:
    """A command to the room, wherever it lives in the cluster: applied by the engine that holds it
    (docs/scaling.md "The Online Space and commands across nodes")."""
    from callctl.conference import remote
    from callctl.store import room_commands

    async def work(pool: Any) -> int:
        conf = await store.get(pool, args.id)
        if conf is None:
            raise CallctlError(f"no conference {args.id}")
        action = "start" if args.start else "stop"
        owner = await room_commands.live_owner(pool, conf.id)
        if owner is None:
            result = "no_live_room"
        else:
            wait_s = float(args.wait)
            result = await remote.send_and_wait(pool, conf.id, owner, "cli", "record" if args.start else
                                                "stop_recording", claim_within_s=min(wait_s, remote.CLAIM_WITHIN_S),
                                                answer_within_s=wait_s)
        if result not in ("started", "stopped"):
            why = _RECORD_ANSWERS.get(result, result.replace("_", " ")).format(owner=owner)
            raise CallctlError(f"conference {conf.id}: recording not {action}ed: {why}")
        print(json.dumps({"id": str(conf.id), "recording": result}))
        return 0

    return _run(_with_pool(settings, work))
