"""Commands to conference rooms across nodes, and the rooms' published state (migration 0026): the SQL,
and the listener connection that hears the NOTIFYs (docs/scaling.md "The Online Space and commands
across nodes")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callctl.store.db import translated
from callctl.store.listen import Listener

_translated = translated("conference commands")

COMMAND_CHANNEL = "callctl_room_command"  # payload: the node a command is addressed to
REPLY_CHANNEL = "callctl_room_reply"  # payload: the command's id
CHANGE_CHANNEL = "callctl_room_change"  # payload: the conference id whose room changed
LISTENER_APP_NAME = "callctl-rooms-listener"
KEEP_COMMANDS = "1 day"  # answered commands name people: kept only for the logs' sake


@dataclass(frozen=True)
class Command:
    id: int
    conference_id: uuid.UUID
    source: str  # 'space' (a person's page) or 'cli' (`callctl conference record`)
    kind: str
    by_person: str | None
    role: str | None
    target: str | None


@dataclass(frozen=True)
class State:
    taken: bool
    result: str | None  # None: not answered yet


@_translated
async def live_owner(db: Any, conference_id: uuid.UUID) -> str | None:
    """The node whose lease on the room runs now, or None (nobody holds the room)."""
    node = await db.fetchval("SELECT node FROM conference_owner WHERE conference_id = $1 AND expires_at > now()",
                             conference_id)
    return None if node is None else str(node)


@_translated
async def lease(db: Any, conference_id: uuid.UUID) -> tuple[str, bool] | None:
    """The room's lease as it stands: (node, still running), None when nobody holds or held it."""
    row = await db.fetchrow("SELECT node, expires_at > now() AS live FROM conference_owner WHERE conference_id = $1",
                            conference_id)
    return None if row is None else (str(row["node"]), bool(row["live"]))


@_translated
async def send(db: Any, conference_id: uuid.UUID, node: str, source: str, kind: str, by_person: str | None,
               role: str | None, target: str | None, claim_within_s: float) -> int:
    """Write a command addressed to ``node`` and wake it (the NOTIFY is delivered at commit)."""
    return int(await db.fetchval(
        "WITH c AS (INSERT INTO conference_command (conference_id, node, source, kind, by_person, role, target, "
        "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8)) RETURNING id) "
        f"SELECT c.id FROM c, pg_notify('{COMMAND_CHANNEL}', $2)",
        conference_id, node, source, kind, by_person, role, target, float(claim_within_s)))


@_translated
async def state(db: Any, command_id: int) -> State:
    row = await db.fetchrow("SELECT taken_at IS NOT NULL AS taken, done_at IS NOT NULL AS done, result "
                            "FROM conference_command WHERE id = $1", command_id)
    if row is None:  # deleted with its conference
        return State(False, "no_live_room")
    return State(row["taken"], str(row["result"]) if row["done"] else None)


@_translated
async def give_up(db: Any, command_id: int, result: str) -> bool:
    """Answer an unclaimed command ``result`` (its owner never will apply it); False if it was claimed."""
    done = await db.fetchval("UPDATE conference_command SET done_at = now(), result = $2 "
                             "WHERE id = $1 AND taken_at IS NULL AND done_at IS NULL RETURNING id", command_id, result)
    return done is not None


@_translated
async def close_claimed(db: Any, command_id: int, result: str) -> None:
    """The sender stops waiting for a claimed command (its owner went away): ``result`` unless answered."""
    await db.execute("UPDATE conference_command SET done_at = now(), result = $2 WHERE id = $1 AND done_at IS NULL",
                     command_id, result)


@_translated
async def claim(db: Any, node: str) -> list[Command]:
    """The commands addressed to ``node`` that nobody claimed and that did not expire: now this node's
    (one statement: a command is claimed once)."""
    rows = await db.fetch(
        "UPDATE conference_command SET taken_at = now() WHERE node = $1 AND taken_at IS NULL AND done_at IS NULL "
        "AND expires_at > now() RETURNING id, conference_id, source, kind, by_person, role, target", node)
    return [Command(r["id"], r["conference_id"], r["source"], r["kind"], r["by_person"], r["role"], r["target"])
            for r in sorted(rows, key=lambda r: int(r["id"]))]


@_translated
async def answer(db: Any, command_id: int, result: str) -> None:
    """The owner's answer, and its sender woken (a sender that gave up meanwhile keeps its own answer)."""
    await db.execute(
        "WITH a AS (UPDATE conference_command SET done_at = now(), result = $2 WHERE id = $1 AND done_at IS NULL "
        f"RETURNING id) SELECT pg_notify('{REPLY_CHANNEL}', $1::text)", command_id, result)


@_translated
async def prune(db: Any) -> None:
    await db.execute(f"DELETE FROM conference_command WHERE requested_at < now() - interval '{KEEP_COMMANDS}'")


# -- the rooms' state, for the pages of other nodes ------------------------------------------------

@_translated
async def publish(db: Any, conference_id: uuid.UUID, node: str, seq: int, view: dict[str, Any] | None) -> None:
    """Write (or, ``view`` None: remove) ``node``'s state of the room and wake the other nodes' pages."""
    if view is None:
        await db.execute("WITH d AS (DELETE FROM conference_live WHERE conference_id = $1 AND node = $2 RETURNING 1) "
                         f"SELECT pg_notify('{CHANGE_CHANNEL}', $1::text)", conference_id, node)
        return
    await db.execute(
        "WITH w AS (INSERT INTO conference_live (conference_id, node, seq, view) VALUES ($1, $2, $3, $4::jsonb) "
        "ON CONFLICT (conference_id) DO UPDATE SET node = EXCLUDED.node, seq = EXCLUDED.seq, "
        "view = EXCLUDED.view, updated_at = now() "
        "WHERE conference_live.node <> EXCLUDED.node OR conference_live.seq < EXCLUDED.seq RETURNING 1) "
        f"SELECT pg_notify('{CHANGE_CHANNEL}', $1::text)",
        conference_id, node, seq, json.dumps(view, separators=(",", ":")))


@_translated
async def published(db: Any, conference_id: uuid.UUID) -> tuple[str, dict[str, Any]] | None:
    """The room's state as its owner wrote it, only while that owner's lease runs: (node, view)."""
    row = await db.fetchrow(
        "SELECT l.node, l.view FROM conference_live l JOIN conference_owner o "
        "ON o.conference_id = l.conference_id AND o.node = l.node "
        "WHERE l.conference_id = $1 AND o.expires_at > now()", conference_id)
    if row is None:
        return None
    view = row["view"]
    return str(row["node"]), json.loads(view) if isinstance(view, str) else dict(view)


# -- the listener ------------------------------------------------------------------------------------

class RoomListener(Listener):
    """The engine's connection LISTENing to the three channels for its life (callctl.store.listen: pinged,
    reconnected with backoff). ``heard(channel, payload)`` runs in the connection's callback (sync, never
    waits). While it is down, the command server and the waiting senders poll (what a missed NOTIFY costs
    is a poll period); once it is back, the command server looks at once (what was sent while it was deaf)."""

    channels = (COMMAND_CHANNEL, REPLY_CHANNEL, CHANGE_CHANNEL)
    app_name = LISTENER_APP_NAME
    event = "room_listener"
    hint = "conference commands and their senders poll PostgreSQL until the listener is back"

    def __init__(self, database_url: str, heard: Callable[[str, str], None], **timing_s: float) -> None:
        super().__init__(database_url, **timing_s)  # ping_interval_s, ping_timeout_s, retry_max_s
        self._tell = heard

    def notified(self, channel: str, payload: str) -> None:
        self._tell(channel, payload)

    async def loaded(self, conn: Any) -> None:
        self._tell(COMMAND_CHANNEL, "")  # whatever was sent while it was deaf: look now
