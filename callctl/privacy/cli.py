"""`callctl privacy inventory|export|erase` and `callctl suspension suspend|resume|purge`: personal
data on request and by retention rule (BRIEF section 6), every change audited under a pseudonym."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from callctl.clitools import account_actions, recordings
from callctl.clitools import parse_now as _now
from callctl.clitools import print_json as _print
from callctl.config import Settings
from callctl.errors import CallctlError
from callctl.numbers import is_e164
from callctl.privacy.inventory import ITEMS
from callctl.privacy.rules import billing_cutoff, pseudonym, purge_due
from callctl.progress import ProgressBar
from callctl.store import privacy as store
from callctl.store import recordings as recordings_store

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
RECORDINGS_NOTE = "each file: `callctl recordings export ID DEST` (checks its sha256)"
ERASE_RULE = ("erasure on request: own bookings, codes, timeline and attempts deleted; CDRs within the "
              "12-month billing retention pseudonymised, older ones deleted")
NEEDS_ATTENTION = 1  # exit status: done, but something is left for a person (as `callctl bill`, `cdr reconcile`)
PURGE_RULE = ("suspended more than one month: users, SIP credentials, numbers and credit deleted; "
              "CDRs within the 12-month billing retention pseudonymised, older ones deleted")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    privacy = sub.add_parser("privacy", parents=[common], help="personal data: inventory, export, erasure")
    psub = privacy.add_subparsers(dest="privacy_command", metavar="ACTION", required=True)
    inv = psub.add_parser("inventory", parents=[common],
                          help="per category: people, records, files and the oldest item (JSON)")
    inv.set_defaults(func=_inventory)
    for name, helptext in (("export", "write everything held about one person as JSON"),
                           ("erase", "delete one person's data; pseudonymise their CDRs still kept for billing")):
        cmd = psub.add_parser(name, parents=[common], help=helptext)
        who = cmd.add_mutually_exclusive_group(required=True)
        who.add_argument("--email", metavar="ADDRESS")
        who.add_argument("--number", metavar="E164")
        if name == "export":
            cmd.add_argument("--out", type=Path, metavar="FILE", help="write there (mode 0600) instead of stdout")
            cmd.set_defaults(func=_export)
        else:
            cmd.add_argument("--dry-run", action="store_true", help="count what would go, change nothing")
            cmd.add_argument("--now", metavar="ISO8601", help="the instant the retention rules read (tests)")
            cmd.set_defaults(func=_erase)

    susp = sub.add_parser("suspension", parents=[common],
                          help="account suspensions: a suspended account's data goes one month later")
    ssub = susp.add_subparsers(dest="suspension_command", metavar="ACTION", required=True)
    # The same two actions also as `callctl account suspend|resume ID` (the spelling).
    for group in (ssub, account_actions(sub, common)):
        for name, func, helptext in (("suspend", _suspend, "suspend an account (its data goes a month later)"),
                                     ("resume", _resume, "resume a suspended account")):
            cmd = group.add_parser(name, parents=[common], help=helptext)
            cmd.add_argument("id", type=uuid.UUID, metavar="ID")
            cmd.add_argument("--now", metavar="ISO8601", help="the instant to record (default: now)")
            cmd.set_defaults(func=func)
    purge = ssub.add_parser("purge", parents=[common],
                            help="delete the data of accounts suspended for more than one month")
    purge.add_argument("--dry-run", action="store_true", help="count what would go, change nothing")
    purge.add_argument("--now", metavar="ISO8601", help="the instant the rules read (default: now)")
    purge.set_defaults(func=_purge)


def _who(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.email is not None:
        email = args.email.strip().lower()
        if not _EMAIL.fullmatch(email):
            raise CallctlError(f"--email {args.email!r} is not an e-mail address")
        return email, None
    number = args.number.strip()
    if not is_e164(number):
        raise CallctlError(f"--number {args.number!r} is not in E.164 form (e.g. +33123456789)")
    return None, number


def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    from callctl.store.db import run_with_pool

    return run_with_pool(settings.database_url, work)


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _files(directory: Path, pattern: str) -> list[Path]:
    try:
        return sorted(p for p in directory.glob(pattern) if p.is_file())
    except OSError:
        return []


def _file_census(paths: list[Path]) -> dict[str, Any]:
    mtimes = []
    for p in paths:
        try:
            mtimes.append(p.stat().st_mtime)
        except OSError:
            continue
    oldest = dt.datetime.fromtimestamp(min(mtimes), dt.UTC) if mtimes else None
    return {"files": len(paths), "oldest": _iso(oldest)}


def _outbox_people(paths: list[Path]) -> int:
    # Outbox files are named <stamp>-<conference>-<recipient>.eml.
    return len({p.stem.rsplit("-", 1)[-1].lower() for p in paths})


def _inventory(args: argparse.Namespace, settings: Settings) -> int:
    counts: dict[str, store.Census] = _with_pool(settings, store.census)
    outbox = _files(settings.outbox_dir, "*.eml")
    spool = _files(settings.spool_dir, "*.jsonl") + _files(settings.spool_dir, "cdr-*.copy")
    out = []
    for item in ITEMS:
        entry: dict[str, Any] = {"item": item.key, "kind": item.kind, "where": item.where, "holds": item.holds,
                                 "kept": item.retention, "deleted_by": item.deleted_by}
        if item.key in counts:
            c = counts[item.key]
            entry.update(people=c.people, records=c.records, oldest=_iso(c.oldest))
        elif item.key == "outbox":
            entry.update(people=_outbox_people(outbox), **_file_census(outbox), directory=str(settings.outbox_dir))
        elif item.key == "cdr_spool":
            entry.update(**_file_census(spool), directory=str(settings.spool_dir))
        elif item.key == "recording":
            entry.update(**_file_census(_files(_recordings_dir(settings), "*.WAV")),
                         directory=str(_recordings_dir(settings)))
        else:
            entry.update(note="not counted: see journald (`journalctl -u callctl`)")
        out.append(entry)
    return _print({"generated_at": dt.datetime.now(dt.UTC).isoformat(), "items": out})


def _recordings_dir(settings: Settings) -> Path:
    return settings.recordings_path  # as the daemon files them (docs/recording.md)


def _mentions(path: Path, needle: str) -> bool:
    if needle in path.name.lower():
        return True
    try:
        return needle.encode() in path.read_bytes().lower()
    except OSError:
        return False


def _export(args: argparse.Namespace, settings: Settings) -> int:
    email, number = _who(args)
    async def work(db: Any) -> tuple[dict[str, Any], list[recordings_store.Recording]]:
        return (await store.collect(db, email=email, number=number),
                await recordings_store.of_person(db, email=email, number=number))

    rows, recs = _with_pool(settings, work)
    needle = (email or number or "").lower()
    outbox: list[str] = []
    files = list(_files(settings.outbox_dir, "*.eml"))
    with ProgressBar("searching the outbox", total=len(files), unit="messages") as bar:  # a terminal only
        for path in files:
            bar.advance()
            if _mentions(path, needle):
                outbox.append(str(path))
    doc = {"subject": {"email": email} if email else {"number": number},
           "generated_at": dt.datetime.now(dt.UTC).isoformat(),
           "database": rows,
           "outbox_files": outbox,
           "recordings": {"recordings": [recordings.describe(r, check=False) for r in recs],
                          "note": RECORDINGS_NOTE}}
    text = json.dumps(doc, indent=2, default=str)
    if args.out is None:
        print(text)
        return 0
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as exc:
        raise CallctlError(f"--out {args.out}: cannot write: {exc.strerror}") from None
    print(f"callctl: export written to {args.out}", file=sys.stderr)
    return 0


def _left_on_other_nodes(gone: dict[str, Any]) -> list[dict[str, Any]]:
    """Recordings a deletion kept because their file is on another node's disk (the row stays for that
    node): each with the node and the command that finishes the job there."""
    return [{"recording": p["id"], "node": p["node"], "location": p.get("location"),
             "to_do": f"on node {p['node']}: callctl recordings delete {p['id']}"}
            for p in gone.get("problems", []) if p.get("file") == "on_other_node"]


def _answer(doc: dict[str, Any], left: list[dict[str, Any]], what: str) -> int:
    """Print the command's JSON; exit NEEDS_ATTENTION, saying why on stderr, when recordings are left."""
    _print(doc)
    if not left:
        return 0
    nodes = ", ".join(sorted({item["node"] for item in left}))
    print(f"callctl: {what}: {len(left)} recording(s) kept, their files are on node(s) {nodes}: "
          "delete them there (needs_attention lists each with its command)", file=sys.stderr)
    return NEEDS_ATTENTION


def _erase(args: argparse.Namespace, settings: Settings) -> int:
    email, number = _who(args)
    now = _now(args.now)
    value = email or number or ""

    async def work(db: Any) -> dict[str, Any]:
        key = await store.secret(db)
        # Found before the erasure deletes the conferences and pseudonymises the CDRs that lead to them.
        recs = await recordings_store.of_person(db, email=email, number=number)
        counts, conferences = await store.erase_person(db, email=email, number=number, key=key,
                                                       cutoff=billing_cutoff(now), dry_run=args.dry_run)
        # Invitations name their conference in the file name; those of a deleted conference go with it.
        files = [p for p in _files(settings.outbox_dir, "*.eml")
                 if _mentions(p, value.lower()) or any(f"-{c}-" in p.name for c in conferences)]
        if not args.dry_run:
            for p in files:
                p.unlink(missing_ok=True)
        counts["outbox_files"] = len(files)
        gone = await recordings.erase_person(db, recs, now, dry_run=args.dry_run)
        counts["recordings"] = len(gone["deleted"])
        counts["recordings_held"] = len(gone["held"])
        left = _left_on_other_nodes(gone)
        counts["recordings_on_other_node"] = len(left)
        subject = pseudonym(key, value)
        await store.audit(db, command="privacy erase " + ("--email" if email else "--number"), rule=ERASE_RULE,
                          subject=subject, dry_run=args.dry_run, counts=counts, at=now)
        return {"subject": subject, "dry_run": args.dry_run, "rule": ERASE_RULE, "counts": counts,
                "kept": ["numbers (DIDs) and forwarding targets belong to their account: "
                         "`callctl user remove` or `callctl suspension purge`",
                         "the CDR spool until PostgreSQL acknowledges it; journald logs (numbers masked)"],
                "needs_attention": left}

    doc = _with_pool(settings, work)
    return _answer(doc, doc["needs_attention"], "privacy erase")


def _suspension_json(s: store.Suspension) -> dict[str, Any]:
    return {"account_id": str(s.account_id), "suspended_at": _iso(s.suspended_at),
            "resumed_at": _iso(s.resumed_at), "purged_at": _iso(s.purged_at)}


def _suspend(args: argparse.Namespace, settings: Settings) -> int:
    at = _now(args.now)

    async def work(db: Any) -> dict[str, Any]:
        s = await store.suspend(db, args.id, at)
        await store.audit(db, command="suspension suspend", rule="account suspended", subject=str(args.id),
                          dry_run=False, counts={}, at=at)
        return _suspension_json(s)

    return _print(_with_pool(settings, work))


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    at = _now(args.now)

    async def work(db: Any) -> dict[str, Any]:
        s = await store.resume(db, args.id, at)
        await store.audit(db, command="suspension resume", rule="account resumed", subject=str(args.id),
                          dry_run=False, counts={}, at=at)
        return _suspension_json(s)

    return _print(_with_pool(settings, work))


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args.now)

    async def work(db: Any) -> dict[str, Any]:
        key = await store.secret(db)
        done = []
        for s in await store.suspended(db):
            if not purge_due(s.suspended_at, now):
                continue
            counts = await store.purge_account(db, s.account_id, key=key, cutoff=billing_cutoff(now), at=now,
                                               dry_run=args.dry_run)
            gone = await recordings.erase_account(db, s.account_id, now, dry_run=args.dry_run)
            counts["recordings"] = len(gone["deleted"])
            left = _left_on_other_nodes(gone)
            counts["recordings_on_other_node"] = len(left)
            await store.audit(db, command="suspension purge", rule=PURGE_RULE, subject=str(s.account_id),
                              dry_run=args.dry_run, counts=counts, at=now)
            done.append({"account_id": str(s.account_id), "suspended_at": _iso(s.suspended_at), "counts": counts,
                         "needs_attention": left})
        return {"now": now.isoformat(), "dry_run": args.dry_run, "rule": PURGE_RULE, "purged": done}

    doc = _with_pool(settings, work)
    return _answer(doc, [item for p in doc["purged"] for item in p["needs_attention"]], "suspension purge")
