"""Recording files at rest: their health (present, intact), export with verification, deletion with
its audit, and the idempotent purge that applies the retention rules (``rules.purge_decision``).

A file is always deleted before its row: a crash in between leaves a row whose file is missing,
which the next purge deletes; never a file nobody knows about.

In a cluster each row names the node that made it (``node_id``). A deletion run on ``node`` (this
process's ``Settings.node``) that does not find the file keeps the row of another node's recording:
the file may be on that node's disk, and deleting the row would leave it there past its retention,
unlisted. With a shared ``recordings_dir`` the file is found and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from callctl.errors import RecordingError as RecordingError  # in the one tree (callctl.errors)
from callctl.progress import ProgressBar
from callctl.recording import rules
from callctl.store import recordings as store


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_status(rec: store.Recording) -> str:
    """'ok', 'missing', 'corrupt' (size or sha256 differ), or the row's state if it has no file yet."""
    if rec.state != "stored" or rec.location is None:
        return rec.state
    path = Path(rec.location)
    try:
        if path.stat().st_size != rec.size_bytes:
            return "corrupt"
        return "ok" if _sha256(path) == rec.sha256 else "corrupt"
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def describe(rec: store.Recording, *, check: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(rec.id), "source": rec.source,
        "conference_id": str(rec.conference_id) if rec.conference_id else None,
        "call_id": str(rec.call_id) if rec.call_id else None,
        "account_id": str(rec.account_id) if rec.account_id else None,
        "state": rec.state, "started_at": rec.started_at.isoformat(),
        "ended_at": rec.ended_at.isoformat() if rec.ended_at else None,
        "duration_ms": rec.duration_ms, "size_bytes": rec.size_bytes, "sha256": rec.sha256,
        "format": rec.format, "location": rec.location, "retention_class": rec.retention_class,
        "delete_after": rules.delete_after(rec.retention_class, rec.ended_at or rec.started_at).isoformat(),
        "legal_hold": rec.legal_hold, "hold_reason": rec.hold_reason, "error": rec.error, "node": rec.node_id,
    }
    if check:
        out["file"] = file_status(rec)
    return out


def export(rec: store.Recording, dest: Path) -> Path:
    """Copy the recording to ``dest`` (a file or a folder) after checking its sha256."""
    status = file_status(rec)
    if status != "ok":
        raise RecordingError(f"recording {rec.id}: file {rec.location} is {status}"
                             + (" (its sha256 no longer matches the one stored when it was recorded): "
                                "not exported" if status == "corrupt" else ": not exported"))
    assert rec.location is not None
    target = dest / Path(rec.location).name if dest.is_dir() else dest
    tmp = target.with_name(target.name + ".part")
    shutil.copyfile(rec.location, tmp)
    if _sha256(tmp) != rec.sha256:  # changed while copying
        tmp.unlink()
        raise RecordingError(f"recording {rec.id}: the copy at {target} does not match the stored sha256: "
                             "not exported")
    os.replace(tmp, target)
    return target


def elsewhere(rec: store.Recording, node: str | None) -> str | None:
    """The other node that made ``rec`` when its file is not here (its row must stay), else None."""
    if rec.location is None or rec.node_id is None or node is None or rec.node_id == node:
        return None
    return rec.node_id if file_status(rec) == "missing" else None


def _not_here(rec: store.Recording, other: str) -> dict[str, Any]:
    return {"id": str(rec.id), "file": "on_other_node", "node": other, "location": rec.location}


def _remove_file(rec: store.Recording) -> str:
    if rec.location is None:
        return "no_file"
    try:
        Path(rec.location).unlink()
        return "deleted"
    except FileNotFoundError:
        return "already_missing"


async def delete(db: Any, rec: store.Recording, rule: str, at: dt.datetime, *, node: str | None) -> dict[str, Any]:
    """Delete file then row, and audit it; RecordingError if under legal hold, or if the file is not
    here and another node made it (run on ``node``; the row stays for that node)."""
    if rec.legal_hold:
        raise RecordingError(f"recording {rec.id} is under legal hold ({rec.hold_reason or 'no reason given'}): "
                             f"release it first with `callctl recordings release {rec.id}`")
    other = elsewhere(rec, node)
    if other is not None:
        raise RecordingError(f"recording {rec.id}: its file {rec.location} is not on this node ({node}) and node "
                             f"{other} made it: run the deletion on {other} (or share recordings_dir); row kept")
    file_result = _remove_file(rec)
    detail = {"source": rec.source, "conference_id": str(rec.conference_id) if rec.conference_id else None,
              "account_id": str(rec.account_id) if rec.account_id else None,
              "started_at": rec.started_at.isoformat(), "ended_at": rec.ended_at.isoformat() if rec.ended_at else None,
              "sha256": rec.sha256, "location": rec.location, "file": file_result, "at": at.isoformat()}
    if not await store.delete(db, rec.id, rule, detail):
        raise RecordingError(f"recording {rec.id} was deleted or put under hold meanwhile")
    return {"id": str(rec.id), "rule": rule, "file": file_result}


async def purge(db: Any, now: dt.datetime, *, dry_run: bool, node: str | None) -> dict[str, Any]:
    """Apply every retention rule once; safe to repeat (what is gone stays gone, the rest is kept)."""
    deleted: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    kept = 0
    candidates = await store.purge_candidates(db)
    with ProgressBar("recordings purge", total=len(candidates), unit="recordings") as bar:
        kept = await _purge_each(db, candidates, now, dry_run, node, deleted, held, problems, bar)
    return {"now": now.isoformat(), "dry_run": dry_run, "deleted": deleted, "held": held, "kept": kept,
            "problems": problems}


async def _purge_each(db: Any, candidates: list[Any], now: dt.datetime, dry_run: bool, node: str | None,
                      deleted: list[dict[str, Any]], held: list[dict[str, Any]], problems: list[dict[str, Any]],
                      bar: ProgressBar) -> int:
    kept = 0
    for rec, account_option in candidates:
        bar.advance()
        candidate = rules.Candidate(str(rec.id), rec.retention_class, rec.started_at, rec.ended_at, rec.legal_hold,
                                    account_option if rec.source == rules.CALL else True)
        decision = rules.purge_decision(candidate, now)
        status = file_status(rec)
        other = elsewhere(rec, node)
        if other is not None:  # that node's own purge deletes it
            problems.append(_not_here(rec, other))
        elif status in ("missing", "corrupt", "unreadable"):
            problems.append({"id": str(rec.id), "file": status, "location": rec.location})
        if decision.held:
            held.append({"id": str(rec.id), "rule": decision.rule, "hold_reason": rec.hold_reason})
            continue
        if not decision.delete or (rec.state == "recording" and decision.rule != rules.RULE_AGE) or other:
            kept += 1  # a recording in progress is filed first (the account rules apply to it next time)
            continue
        if dry_run:
            deleted.append({"id": str(rec.id), "rule": decision.rule, "file": status})
            continue
        try:
            deleted.append(await delete(db, rec, decision.rule, now, node=node))
        except (RecordingError, OSError) as exc:
            problems.append({"id": str(rec.id), "error": str(exc)})
    return kept


async def delete_all(db: Any, recs: list[store.Recording], rule: str, now: dt.datetime, *, node: str | None,
                     dry_run: bool = False) -> dict[str, Any]:
    """Delete each recording (not those under legal hold, nor one still being captured, nor another
    node's whose file is not here: those are in ``problems``)."""
    deleted: list[dict[str, Any]] = []
    held: list[str] = []
    problems: list[dict[str, Any]] = []
    for rec in recs:
        if rec.state == "recording":
            continue
        other = elsewhere(rec, node)
        if rec.legal_hold:
            held.append(str(rec.id))
        elif other is not None:
            problems.append(_not_here(rec, other))
        elif dry_run:
            deleted.append({"id": str(rec.id), "rule": rule, "file": file_status(rec)})
        else:
            deleted.append(await delete(db, rec, rule, now, node=node))
    return {"deleted": deleted, "held": held, "problems": problems}


async def delete_account_calls(db: Any, account_id: uuid.UUID, now: dt.datetime,
                               rule: str = rules.RULE_ACCOUNT_OPTION_OFF, *, node: str | None,
                               dry_run: bool = False) -> dict[str, Any]:
    """The account's recording option or service ended: every call recording of it goes."""
    recs = [r for r in await store.list_recordings(db, account_id=account_id) if r.source == rules.CALL]
    return await delete_all(db, recs, rule, now, node=node, dry_run=dry_run)
