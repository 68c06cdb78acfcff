"""Conference rooms wherever they live in the cluster (issue 18, docs/scaling.md "The Online Space and
commands across nodes"): the Online Space and `callctl conference record` reach the room held by another
node through PostgreSQL. A command is a row addressed to the room's owner (the lease holder), claimed by
it in one statement and answered there; the owner publishes its room's state for the other nodes' pages.

Faults: a command nobody claimed within ``claim_within_s`` is withdrawn by its sender in one statement
(answer 'owner_unreachable': nothing was done, and a late owner never does it); a claimed command whose
owner dies before answering is answered 'owner_lost' once its lease has run out (it may or may not have
been applied: the person is told to look at the room). Never applied twice: only one claim succeeds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from callctl.conference.actions import Action, MemberView, RoomView
from callctl.conference.changes import ChangeFeed
from callctl.errors import StoreError
from callctl.logging import get_logger
from callctl.store import room_commands as store
from callctl.tasks import wait_for_event

log = get_logger("callctl.conference")

CLAIM_WITHIN_S = 5.0  # a live owner claims within milliseconds (NOTIFY); this long means it is gone
ANSWER_WITHIN_S = 30.0  # starting a recording plays the notice to everyone first
POLL_S = 0.25  # a sender's look at its command when no NOTIFY woke it (listener down, or the CLI)
LEASE_CHECK_S = 1.0
RECORDING_KINDS = {"record": True, "stop_recording": False}
PUBLISH_EVERY_S = 0.25  # a room's state for other nodes' pages: at most this stale, one write per burst


class LocalRooms(Protocol):
    """The rooms this engine holds (callctl.conference.service.ConferenceService)."""

    def view(self, conference_id: uuid.UUID) -> RoomView | None: ...
    async def act(self, conference_id: uuid.UUID, action: Action) -> str: ...
    async def set_recording(self, conference_id: uuid.UUID, on: bool) -> str: ...


def view_to_json(view: RoomView) -> dict[str, Any]:
    return {"members": [{"person": m.person, "role": m.role, "muted": m.muted, "waiting": m.waiting,
                         "joined_at": m.joined_at.isoformat() if m.joined_at else None} for m in view.members],
            "locked": view.locked, "participants_muted": view.participants_muted, "recording": view.recording}


def view_from_json(doc: dict[str, Any]) -> RoomView:
    members = tuple(MemberView(str(m["person"]), str(m["role"]),
                               dt.datetime.fromisoformat(m["joined_at"]) if m.get("joined_at") else None,
                               bool(m["muted"]), bool(m["waiting"])) for m in doc.get("members", ()))
    return RoomView(members, bool(doc.get("locked")), bool(doc.get("participants_muted")),
                    bool(doc.get("recording")))


async def send_and_wait(pool: Any, conference_id: uuid.UUID, owner: str, source: str, kind: str, *,
                        by: str | None = None, role: str | None = None, target: str | None = None,
                        claim_within_s: float = CLAIM_WITHIN_S, answer_within_s: float = ANSWER_WITHIN_S,
                        woken: Callable[[int, float], Awaitable[None]] | None = None) -> str:
    """Send a command to the room's owner and wait for its answer (or say why there is none).
    ``woken(id, timeout_s)`` returns early when the owner's answer is notified; without it, polls."""
    loop = asyncio.get_running_loop()
    command_id = await store.send(pool, conference_id, owner, source, kind, by, role, target, claim_within_s)
    started = loop.time()
    next_lease_check = started + LEASE_CHECK_S
    while True:
        if woken is not None:
            await woken(command_id, POLL_S)
        else:
            await asyncio.sleep(POLL_S)
        state = await store.state(pool, command_id)
        if state.result is not None:
            return state.result
        now = loop.time()
        if not state.taken:
            if now - started > claim_within_s and await store.give_up(pool, command_id, "owner_unreachable"):
                log.warning("conference_command_unanswered", conference_id=str(conference_id), owner=owner,
                            command=kind, waited_s=round(now - started, 3))
                return "owner_unreachable"
            continue
        lost = now - started > claim_within_s + answer_within_s
        if not lost and now >= next_lease_check:
            next_lease_check = now + LEASE_CHECK_S
            # The owner's lease ran out (or moved): it died with the command in hand. (No lease at all:
            # the room closed, its owner's answer is on its way.)
            lease = await store.lease(pool, conference_id)
            lost = lease is not None and lease != (owner, True)
        if lost:
            await store.close_claimed(pool, command_id, "owner_lost")
            final = await store.state(pool, command_id)
            if final.result != "owner_lost":
                return final.result or "owner_lost"
            log.warning("conference_command_owner_lost", conference_id=str(conference_id), owner=owner, command=kind)
            return "owner_lost"


class ClusterRooms:
    """What the Online Space acts on (callctl.web.server.Rooms): this engine's rooms directly, another
    node's through PostgreSQL. Also the owner's side: it claims and applies the commands addressed to this
    node, and publishes its rooms' state. ``serve()`` runs for the engine's life (a side task)."""

    def __init__(self, pool: Any, database_url: str, rooms: LocalRooms, changes: ChangeFeed, node: str) -> None:
        self._pool = pool
        self._rooms = rooms
        self.changes = changes  # the service's ChangeFeed: remote rooms' changes are announced there too
        self.node = node
        self.listener = store.RoomListener(database_url, self._heard)  # its state: for tests and health
        self._replies: dict[int, asyncio.Event] = {}
        self._commands = asyncio.Event()
        self._dirty: set[str] = set()
        self._publish = asyncio.Event()
        self._seq = 0
        self._working: set[asyncio.Task[None]] = set()

    # -- the pages' side ---------------------------------------------------------------------------

    async def view(self, conference_id: uuid.UUID) -> RoomView | None:
        """The live room, held here or by another node (None: nobody is in the call)."""
        local = self._rooms.view(conference_id)
        if local is not None:
            return local
        found = await store.published(self._pool, conference_id)
        return None if found is None else view_from_json(found[1])

    async def act(self, conference_id: uuid.UUID, action: Action) -> str:
        return await self.command(conference_id, "space", action.kind, by=action.by, role=action.role,
                                  target=action.target)

    async def command(self, conference_id: uuid.UUID, source: str, kind: str, *, by: str | None = None,
                      role: str | None = None, target: str | None = None) -> str:
        if self._rooms.view(conference_id) is not None:
            return await self._apply(conference_id, source, kind, by, role, target)
        owner = await store.live_owner(self._pool, conference_id)
        if owner is None or owner == self.node:  # nobody holds it, or this engine's lease outlives its room
            return "no_live_room"
        log.info("conference_command_forwarded", conference_id=str(conference_id), owner=owner, command=kind)
        return await send_and_wait(self._pool, conference_id, owner, source, kind, by=by, role=role,
                                   target=target, woken=self._wait_for_reply)

    async def _wait_for_reply(self, command_id: int, timeout_s: float) -> None:
        event = self._replies.setdefault(command_id, asyncio.Event())
        try:
            await wait_for_event(event, timeout_s)
        finally:
            self._replies.pop(command_id, None)

    # -- the owner's side ------------------------------------------------------------------------------

    async def _apply(self, conference_id: uuid.UUID, source: str, kind: str, by: str | None, role: str | None,
                     target: str | None) -> str:
        if source == "cli":
            if kind not in RECORDING_KINDS:
                return "unknown_action"
            return await self._rooms.set_recording(conference_id, RECORDING_KINDS[kind])
        return await self._rooms.act(conference_id, Action(kind, by or "", role or "", target))

    def _heard(self, channel: str, payload: str) -> None:
        if channel == store.COMMAND_CHANNEL and payload in (self.node, ""):
            self._commands.set()
        elif channel == store.REPLY_CHANNEL and payload.isdigit():
            waiting = self._replies.get(int(payload))
            if waiting is not None:  # otherwise its sender is between two looks: the next one sees it
                waiting.set()
        elif channel == store.CHANGE_CHANNEL and payload:
            self.changes.notify(payload)

    def room_changed(self, conference_id: str) -> None:
        """The service's hook: a room held here changed or closed (sync; published in the background)."""
        self._dirty.add(conference_id)
        self._publish.set()

    async def serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.listener.run(), name="rooms-listener")
                tg.create_task(self._serve_commands(), name="rooms-commands")
                tg.create_task(self._serve_views(), name="rooms-views")
        finally:  # at shutdown: commands being applied stop with the rooms (their senders hear 'owner_lost')
            for task in list(self._working):
                task.cancel()
            if self._working:
                await asyncio.wait(list(self._working), timeout=2.0)

    async def _serve_commands(self) -> None:
        failing = False
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            self._commands.clear()
            try:
                for cmd in await store.claim(self._pool, self.node):
                    task = asyncio.create_task(self._run_command(cmd), name=f"room-command-{cmd.id}")
                    self._working.add(task)
                    task.add_done_callback(self._working.discard)
                if loop.time() >= next_prune:
                    next_prune = loop.time() + 600.0
                    await store.prune(self._pool)
                if failing:
                    log.info("conference_commands_store_back")
                failing = False
            except StoreError as exc:
                if not failing:
                    log.error("conference_commands_store_lost", error=exc.message)
                failing = True
            # Woken by NOTIFY; a look every second anyway (the listener may be reconnecting).
            await wait_for_event(self._commands, 1.0 if self.listener.listening else 0.2)

    async def _run_command(self, cmd: store.Command) -> None:
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S - 1.0):
                result = await self._apply(cmd.conference_id, cmd.source, cmd.kind, cmd.by_person, cmd.role,
                                           cmd.target)
        except TimeoutError:
            result = "failed"
        log.info("conference_command_applied", conference_id=str(cmd.conference_id), command=cmd.kind,
                 source=cmd.source, result=result)
        for _attempt in range(3):  # the answer matters: the sender waits for it
            try:
                await store.answer(self._pool, cmd.id, result)
                return
            except StoreError as exc:
                log.warning("conference_command_answer_failed", error=exc.message)
                await asyncio.sleep(1.0)

    async def _serve_views(self) -> None:
        failing = False
        while True:
            await self._publish.wait()
            self._publish.clear()
            dirty, self._dirty = self._dirty, set()
            for cid in sorted(dirty):
                conference_id = uuid.UUID(cid)
                view = self._rooms.view(conference_id)
                self._seq += 1
                try:
                    await store.publish(self._pool, conference_id, self.node, self._seq,
                                        None if view is None else view_to_json(view))
                except StoreError as exc:
                    if not failing:  # once per outage; the rooms themselves need no database
                        log.warning("conference_view_publish_failed", conference_id=cid, error=exc.message)
                    failing = True
                    self._dirty.add(cid)  # the latest state is written when the database answers again
                else:
                    if failing:
                        log.info("conference_view_publish_back")
                    failing = False
            if self._dirty:
                await asyncio.sleep(1.0)
                self._publish.set()
            else:  # changes of the next quarter second are written together (callers joining in a burst)
                await asyncio.sleep(PUBLISH_EVERY_S)
