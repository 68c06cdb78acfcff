"""`callctl recordings list|show|export|delete|hold|release|purge` and
`callctl account recording ID --enable|--disable`: recordings at rest, from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from callctl.clitools import account_actions
from callctl.clitools import json_with_pool as _with_pool
from callctl.clitools import parse_now as _now
from callctl.config import Settings
from callctl.recording import retention, rules
from callctl.recording.retention import RecordingError
from callctl.store import recordings as store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    rec = sub.add_parser("recordings", parents=[common], help="call and conference recordings")
    rsub = rec.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)
    lst = rsub.add_parser("list", parents=[common], help="recordings, with the state of each file (JSON)")
    lst.add_argument("--account", type=uuid.UUID, metavar="ID")
    lst.add_argument("--conference", type=uuid.UUID, metavar="ID")
    lst.set_defaults(func=_list)
    show = rsub.add_parser("show", parents=[common], help="a recording, its notices, objections and audit")
    show.add_argument("id", type=uuid.UUID)
    show.set_defaults(func=_show)
    exp = rsub.add_parser("export", parents=[common], help="copy a recording out after checking its sha256")
    exp.add_argument("id", type=uuid.UUID)
    exp.add_argument("dest", type=Path, metavar="DEST", help="a file name, or an existing folder")
    exp.set_defaults(func=_export)
    delete = rsub.add_parser("delete", parents=[common], help="delete a recording now (the organizer's right)")
    delete.add_argument("id", type=uuid.UUID)
    delete.set_defaults(func=_delete)
    hold = rsub.add_parser("hold", parents=[common], help="put a recording under legal hold: nothing deletes it")
    hold.add_argument("id", type=uuid.UUID)
    hold.add_argument("--reason", default=None)
    hold.set_defaults(func=_hold, held=True)
    release = rsub.add_parser("release", parents=[common], help="lift a legal hold")
    release.add_argument("id", type=uuid.UUID)
    release.set_defaults(func=_hold, held=False, reason=None)
    purge = rsub.add_parser("purge", parents=[common],
                            help="delete what the retention rules say must go (run by callctl-retention.timer)")
    purge.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    purge.add_argument("--now", metavar="ISO8601", help="the instant the rules read (default: now)")
    purge.set_defaults(func=_purge)

    option = account_actions(sub, common).add_parser(
        "recording", parents=[common],
        help="switch an account's automatic call recording on or off (off deletes its call recordings)")
    option.add_argument("id", type=uuid.UUID)
    which = option.add_mutually_exclusive_group(required=True)
    which.add_argument("--enable", action="store_true")
    which.add_argument("--disable", action="store_true")
    option.set_defaults(func=_account_recording)


async def _get(db: Any, recording_id: uuid.UUID) -> store.Recording:
    rec = await store.get(db, recording_id)
    if rec is None:
        raise RecordingError(f"no recording {recording_id} (see `callctl recordings list`)")
    return rec


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> list[dict[str, Any]]:
        recs = await store.list_recordings(db, account_id=args.account, conference_id=args.conference)
        return [retention.describe(r) for r in recs]

    return _with_pool(settings, work)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        rec = await _get(db, args.id)
        return {**retention.describe(rec), "notices": await store.notices(db, rec.id),
                "audit": await store.audit(db, rec.id)}

    return _with_pool(settings, work)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        rec = await _get(db, args.id)
        target = retention.export(rec, args.dest)
        await store.append_audit(db, rec.id, "exported", "export", {"to": str(target)})
        return {"id": str(rec.id), "exported_to": str(target), "sha256": rec.sha256}

    return _with_pool(settings, work)


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        rec = await _get(db, args.id)
        if rec.state == "recording":
            raise RecordingError(f"recording {rec.id} is still in progress: stop it first "
                                 "(`callctl conference record ID --stop` or *3 in the room)")
        return await retention.delete(db, rec, rules.RULE_ORGANIZER, dt.datetime.now(dt.UTC), node=settings.node)

    return _with_pool(settings, work)


def _hold(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        rec = await _get(db, args.id)
        if not await store.set_hold(db, rec.id, args.held, args.reason):
            raise RecordingError(f"no recording {args.id}")
        return {"id": str(rec.id), "legal_hold": args.held, "reason": args.reason}

    return _with_pool(settings, work)


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args.now)

    async def work(db: Any) -> dict[str, Any]:
        return await retention.purge(db, now, dry_run=args.dry_run, node=settings.node)

    return _with_pool(settings, work)


def _account_recording(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        if not await store.set_account_recording(db, args.id, bool(args.enable)):
            raise RecordingError(f"no account {args.id} (see `callctl account show ID`)")
        out: dict[str, Any] = {"id": str(args.id), "recording": bool(args.enable)}
        if args.disable:
            out.update(await retention.delete_account_calls(db, args.id, dt.datetime.now(dt.UTC), node=settings.node))
        return out

    return _with_pool(settings, work)
