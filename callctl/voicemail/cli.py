"""`callctl voicemail list|export|delete`: voicemail messages at rest, from the command line.

A message is a recording (retention class voicemail): `callctl recordings hold|release ID` puts it
under legal hold or lifts it, and `callctl recordings purge` deletes it after 3 months.
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from callctl import clitools
from callctl.config import Settings
from callctl.errors import RecordingError
from callctl.store import recordings as recordings_store
from callctl.store import voicemail as store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    vm = sub.add_parser("voicemail", parents=[common], help="voicemail messages")
    vsub = vm.add_subparsers(dest="voicemail_command", metavar="ACTION", required=True)
    lst = vsub.add_parser("list", parents=[common], help="messages with their caller, box and e-mail delivery (JSON)")
    lst.add_argument("--box", metavar="NAME")
    lst.set_defaults(func=_list)
    exp = vsub.add_parser("export", parents=[common], help="copy a message's audio out after checking its sha256")
    exp.add_argument("id", type=uuid.UUID)
    exp.add_argument("dest", type=Path, metavar="DEST", help="a file name, or an existing folder")
    exp.set_defaults(func=_export)
    delete = vsub.add_parser("delete", parents=[common], help="delete a message now (file, then row; audited)")
    delete.add_argument("id", type=uuid.UUID)
    delete.set_defaults(func=_delete)


def describe(msg: store.Message) -> dict[str, Any]:
    return {**clitools.recordings.describe(msg.recording), "box": msg.box, "caller": msg.caller, "called": msg.called,
            "email_to": msg.email_to, "emailed_at": msg.emailed_at.isoformat() if msg.emailed_at else None,
            "email_error": msg.email_error}


async def _get(db: Any, message_id: uuid.UUID) -> store.Message:
    msg = await store.get(db, message_id)
    if msg is None:
        raise RecordingError(f"no voicemail message {message_id} (see `callctl voicemail list`)")
    return msg


def _list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> list[dict[str, Any]]:
        return [describe(m) for m in await store.messages(db, args.box)]

    return clitools.json_with_pool(settings, work)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        msg = await _get(db, args.id)
        target = clitools.recordings.export(msg.recording, args.dest)
        await recordings_store.append_audit(db, msg.recording.id, "exported", "export", {"to": str(target)})
        return {"id": str(args.id), "exported_to": str(target), "sha256": msg.recording.sha256}

    return clitools.json_with_pool(settings, work)


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        msg = await _get(db, args.id)
        if msg.recording.state == "recording":
            raise RecordingError(f"voicemail message {args.id} is still being recorded: try again in a minute")
        return await clitools.recordings.delete_on_request(db, msg.recording, dt.datetime.now(dt.UTC))

    return clitools.json_with_pool(settings, work)
