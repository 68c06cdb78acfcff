"""The recording service: tells every party before capture starts, records bridges through ARI,
files finished recordings with their metadata (`callctl conference record` asks the room itself, through
callctl.conference.remote, as the Online Space does).

- Notice first: the notice is played on each party's own channel (in their language) and capture
  starts only once every one of those playbacks is over, so not a frame is recorded before.
- Capture: ``POST /bridges/{id}/record`` in ``rules.FORMAT``. Asterisk writes into its own
  spool; when a recording ends the engine fetches the file over ARI, writes it under
  ``recordings_dir`` (fsync, then rename), hashes it, stores the metadata and deletes Asterisk's copy.
- Resynchronisation: rows still 'recording' that this engine does not own (it restarted) are
  watched until Asterisk has finished them (or their bridge emptied), then filed the same way. A
  conference recording whose old bridge emptied because its members re-joined through the new
  engine follows them: the conference's new room is asked to record (notice first, as always).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from callctl.errors import AriError, StoreError
from callctl.logging import get_logger
from callctl.recording import rules
from callctl.store import recordings as store

log = get_logger("callctl.recording")

NOTICE_MAX_S = 60.0  # an upper bound on a notice playback whose end is never seen
POLL_S = 0.1  # how often a notice playback is checked for its end
FINISH_WAIT_S = 15.0  # how long Asterisk may take to close a stopped recording


class RecordingOps(Protocol):
    """The ARI operations recording needs (callctl.ari.client.AriClient)."""

    async def play(self, channel_id: str, media: list[str], playback_id: str, language: str) -> None: ...
    async def playback_live(self, playback_id: str) -> bool: ...
    async def record_bridge(self, bridge_id: str, name: str, fmt: str) -> None: ...
    async def record_channel(self, channel_id: str, name: str, fmt: str, *, max_s: int, silence_s: int,
                             beep: bool) -> None: ...
    async def stop_recording(self, name: str) -> None: ...
    async def live_recording_state(self, name: str) -> str | None: ...
    async def stored_recording(self, name: str) -> bytes | None: ...
    async def delete_stored_recording(self, name: str) -> None: ...
    async def bridge_channel_count(self, bridge_id: str) -> int | None: ...


@dataclass(frozen=True)
class Party:
    """Someone who must hear the notice: their channel, who they are, their language."""

    channel_id: str
    person: str
    leg_id: str
    language: str


@dataclass
class Active:
    """A recording this engine is capturing."""

    id: uuid.UUID
    name: str
    source: str
    bridge_id: str
    heard: set[str] = field(default_factory=set)  # channel ids that heard the notice


class RecordingService:
    def __init__(self, pool: Any, ops: RecordingOps, recordings_dir: Path, *,
                 objection_key: str = rules.DEFAULT_OBJECTION_KEY,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 watch_poll_s: float = 2.0, node: str | None = None) -> None:
        self._pool = pool
        self._node = node  # stored on each row it creates (docs/scaling.md "Recordings in a cluster")
        self._ops = ops
        self._dir = recordings_dir
        self.objection_key = objection_key  # named by the call notice; LineRecorder acts on it
        self._clock = clock
        self._watch_poll_s = watch_poll_s
        self._active: dict[uuid.UUID, Active] = {}
        self._watched: dict[uuid.UUID, asyncio.Task[None]] = {}  # re-attached rows -> their watcher
        self._follow: Callable[[uuid.UUID], Awaitable[str]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # filing: finished before shutdown
        self._watchers: set[asyncio.Task[None]] = set()  # re-attached recordings: the next engine resumes them

    @property
    def pool(self) -> Any:
        return self._pool

    def follow_rooms_with(self, start: Callable[[uuid.UUID], Awaitable[str]]) -> None:
        """``start(conference_id)`` asks the conference's live room to record (the `conference record
        --start` path; returns started, no_live_room, already_recording...). Used when a conference
        recording re-attached after a restart loses its members to the new engine's room."""
        self._follow = start

    # -- notice --------------------------------------------------------------------------------

    async def tell(self, source: str, parties: list[Party],
                   recording: Active | None = None) -> list[tuple[Party, str, dt.datetime]]:
        """Play the notice to every party on their own channel and wait until all have heard it.

        Returns (party, prompt id, when it ended) for those who heard it; stored with ``recording``.
        """
        playing: list[tuple[Party, str, str]] = []
        for party in parties:
            prompt, media = rules.notice_media(source, party.language, self.objection_key)
            playback_id = uuid.uuid4().hex
            try:
                await self._ops.play(party.channel_id, [media], playback_id, party.language)
            except AriError as exc:
                log.warning("recording_notice_failed", error=exc.message)
                continue
            playing.append((party, prompt, playback_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NOTICE_MAX_S
        pending = list(playing)
        heard: list[tuple[Party, str, dt.datetime]] = []
        while pending and loop.time() < deadline:
            still = []
            for party, prompt, playback_id in pending:
                if await self._live(playback_id):
                    still.append((party, prompt, playback_id))
                else:
                    heard.append((party, prompt, self._clock()))
            pending = still
            if pending:
                await asyncio.sleep(POLL_S)
        heard += [(party, prompt, self._clock()) for party, prompt, _ in pending]
        if recording is not None:
            await self._store_notices(recording, heard)
        return heard

    async def _live(self, playback_id: str) -> bool:
        try:
            return await self._ops.playback_live(playback_id)
        except AriError:
            return False

    async def record_heard(self, recording: Active, party: Party, prompt: str) -> None:
        """A party heard the notice some other way (on their own call, before joining)."""
        await self._store_notices(recording, [(party, prompt, self._clock())])

    async def _store_notices(self, recording: Active, heard: list[tuple[Party, str, dt.datetime]]) -> None:
        for party, prompt, at in heard:
            recording.heard.add(party.channel_id)
            try:
                await store.add_notice(self._pool, recording.id, party.person, party.leg_id, prompt,
                                       prompt.rsplit(":", 1)[1], at)
            except StoreError as exc:
                log.error("recording_notice_write_failed", error=exc.message)

    # -- capture -------------------------------------------------------------------------------

    async def start(self, source: str, bridge_id: str, parties: list[Party], *, conference_id: str | None = None,
                    call_id: str | None = None, account_id: str | None = None) -> Active | None:
        """Notice to everyone, then record the bridge; None if Asterisk or the store refused."""
        heard = await self.tell(source, parties)
        recording_id = uuid.uuid4()
        name = rules.recording_name(str(recording_id))
        started_at = self._clock()
        try:
            await self._ops.record_bridge(bridge_id, name, rules.FORMAT)
        except AriError as exc:
            log.error("recording_start_failed", source=source, error=exc.message)
            return None
        active = Active(recording_id, name, source, bridge_id)
        try:
            await store.create(self._pool, recording_id=recording_id, source=source, asterisk_name=name,
                               bridge_id=bridge_id, fmt=rules.FORMAT, started_at=started_at,
                               retention_class=source,
                               conference_id=uuid.UUID(conference_id) if conference_id else None,
                               call_id=uuid.UUID(call_id) if call_id else None,
                               account_id=uuid.UUID(account_id) if account_id else None, node_id=self._node)
        except StoreError as exc:
            # A recording without its metadata would escape retention: it is not kept.
            log.error("recording_metadata_write_failed", error=exc.message)
            await self._drop_in_asterisk(name)
            return None
        await self._store_notices(active, heard)
        self._active[recording_id] = active
        log.info("recording_started", recording_id=str(recording_id), source=source, conference_id=conference_id,
                 parties=len(heard))
        return active

    async def stop(self, active: Active) -> None:
        """Stop capture now; the file is fetched and filed in the background (``close`` waits)."""
        self._active.pop(active.id, None)
        try:
            await self._ops.stop_recording(active.name)
        except AriError as exc:
            log.warning("recording_stop_failed", recording_id=str(active.id), error=exc.message)
        log.info("recording_stopped", recording_id=str(active.id), source=active.source)
        self._spawn(self._file(active.id, active.name))

    async def discard(self, active: Active, rule: str, detail: dict[str, Any]) -> None:
        """Stop and throw away what was captured (an objection); the row keeps notice and objection."""
        self._active.pop(active.id, None)
        await self._drop_in_asterisk(active.name)
        try:
            await store.discard(self._pool, active.id, self._clock(), rule, detail)
        except StoreError as exc:
            log.error("recording_discard_write_failed", recording_id=str(active.id), error=exc.message)
        log.info("recording_discarded", recording_id=str(active.id), rule=rule)

    async def _drop_in_asterisk(self, name: str) -> None:
        try:
            await self._ops.stop_recording(name)
            await self._wait_for_closed(name)
            await self._ops.delete_stored_recording(name)
        except AriError as exc:
            log.error("recording_drop_failed", error=exc.message)

    async def record_message(self, channel_id: str, *, call_id: str | None, max_s: int, silence_s: int,
                             beep: bool) -> store.Recording | None:
        """Record one voicemail message from the caller's channel and file it like every recording
        (retention class voicemail). Returns the stored row; None when nothing was recorded (the
        caller hung up at once) or Asterisk or the store refused. Runs to the end even if the
        caller hangs up meanwhile (that is how most messages end)."""
        recording_id = uuid.uuid4()
        name = rules.recording_name(str(recording_id))
        started_at = self._clock()
        try:
            await store.create(self._pool, recording_id=recording_id, source=rules.VOICEMAIL, asterisk_name=name,
                               bridge_id=channel_id, fmt=rules.FORMAT, started_at=started_at,
                               retention_class=rules.VOICEMAIL, call_id=uuid.UUID(call_id) if call_id else None,
                               node_id=self._node)
        except StoreError as exc:
            log.error("voicemail_metadata_write_failed", error=exc.message)
            return None
        try:
            await self._ops.record_channel(channel_id, name, rules.FORMAT, max_s=max_s, silence_s=silence_s,
                                           beep=beep)
        except AriError as exc:
            log.warning("voicemail_record_failed", error=exc.message)
            await store.fail(self._pool, recording_id, self._clock(), f"not recorded: {exc.message}")
            return None
        await self._wait_for_closed(name, max_s + FINISH_WAIT_S)
        await self._file(recording_id, name)
        row = await store.get(self._pool, recording_id)
        return row if row is not None and row.state == "stored" else None

    async def _wait_for_closed(self, name: str, wait_s: float = FINISH_WAIT_S) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # Asterisk sends RecordingFinished only to subscribers of the bridge; a short poll is simpler.
        while loop.time() < deadline:
            if await self._ops.live_recording_state(name) is None:
                return
            await asyncio.sleep(POLL_S)

    async def _file(self, recording_id: uuid.UUID, name: str, started_at: dt.datetime | None = None) -> None:
        """Fetch the finished recording from Asterisk, write it under recordings_dir, store its facts.

        ``started_at`` (a recording re-attached after a restart): its end is the start plus what
        Asterisk wrote, not the moment this engine noticed."""
        ended_at = self._clock()
        try:
            await self._wait_for_closed(name)
            data = await self._ops.stored_recording(name)
        except AriError as exc:
            log.error("recording_fetch_failed", recording_id=str(recording_id), error=exc.message)
            return  # still 'recording' in the store: the next resynchronisation files it
        if data is None:
            log.error("recording_file_missing", recording_id=str(recording_id))
            await store.fail(self._pool, recording_id, ended_at, "Asterisk has no file for this recording")
            return
        path = self._dir / f"{recording_id}.{rules.EXTENSION}"
        await asyncio.to_thread(_write_durably, path, data)
        digest = hashlib.sha256(data).hexdigest()
        duration_ms = rules.wav_duration_ms(data)
        if started_at is not None and duration_ms is not None:
            ended_at = started_at + dt.timedelta(milliseconds=duration_ms)
        await store.finish(self._pool, recording_id, ended_at=ended_at, duration_ms=duration_ms,
                           size_bytes=len(data), sha256=digest, location=str(path))
        try:
            await self._ops.delete_stored_recording(name)
        except AriError as exc:  # harmless: a copy left in Asterisk's spool
            log.warning("recording_spool_cleanup_failed", error=exc.message)
        log.info("recording_filed", recording_id=str(recording_id), size_bytes=len(data), duration_ms=duration_ms)

    # -- resynchronisation ---------------------------------------------------------------------

    async def resync(self) -> None:
        """Re-attach recordings a previous engine started: watch each until Asterisk is done with it."""
        try:
            rows = await store.in_progress(self._pool)
        except StoreError as exc:
            log.error("recording_resync_failed", error=exc.message)
            return
        for row in rows:
            if row.id in self._active or row.id in self._watched:
                continue
            log.info("recording_reattached", recording_id=str(row.id), source=row.source)
            self._watched[row.id] = self._spawn(self._watch(row), self._watchers)

    async def adopt(self, bridge_id: str) -> Active | None:
        """A two-party call resumed after a restart takes back the recording a previous engine started on
        its bridge (still capturing in Asterisk): it stops, files or discards it itself (the objection key
        works again); None if that call was not being recorded."""
        try:
            rows = [r for r in await store.in_progress(self._pool) if r.bridge_id == bridge_id]
        except StoreError as exc:
            log.error("recording_adopt_failed", error=exc.message)
            return None
        if not rows:
            return None
        row = rows[0]
        watcher = self._watched.pop(row.id, None)
        if watcher is not None:  # re-attached by resync meanwhile: the call owns it from now on
            watcher.cancel()
        active = Active(row.id, row.asterisk_name, row.source, row.bridge_id)
        self._active[row.id] = active
        log.info("recording_adopted", recording_id=str(row.id), source=row.source)
        return active

    async def _watch(self, row: store.Recording) -> None:
        try:
            seen_members = False
            while True:
                state = await self._ops.live_recording_state(row.asterisk_name)
                members = await self._ops.bridge_channel_count(row.bridge_id)
                # Asterisk ends a bridge recording itself once the bridge is left empty, often before
                # this poll sees the bridge empty: both mean its members are gone.
                emptied = not members
                if state is None:
                    break
                if emptied:  # the room or call it recorded is gone: nothing more to capture
                    await self._ops.stop_recording(row.asterisk_name)
                    break
                seen_members = True
                await asyncio.sleep(self._watch_poll_s)
            try:
                await self._file(row.id, row.asterisk_name, row.started_at)
            except StoreError as exc:  # still 'recording': the next resynchronisation files it
                log.error("recording_filing_failed", recording_id=str(row.id), error=exc.message)
            # Only members this engine saw leave: a bridge found empty at once (a later reconnect
            # re-attaching a row it could not file) says nothing of where its members went.
            if emptied and seen_members and row.source == rules.CONFERENCE:
                await self._follow_members(row)
        except AriError as exc:
            log.warning("recording_watch_interrupted", recording_id=str(row.id), error=exc.message)
        finally:
            self._watched.pop(row.id, None)

    async def _follow_members(self, row: store.Recording) -> None:
        """The members left the old bridge: adopted after the restart, their calls re-entered their code
        and joined the conference's new room (or hung up). The organizer's request to record stands:
        the new room records, as a new recording (a bridge recording cannot move), notice first."""
        if self._follow is None or row.conference_id is None:
            return
        result = await self._follow(row.conference_id)
        log.info("recording_followed_members", previous_recording_id=str(row.id),
                 conference_id=str(row.conference_id), result=result)

    # -- ownership -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None],
               owner: set[asyncio.Task[None]] | None = None) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except (StoreError, AriError, OSError) as exc:
                log.error("recording_task_failed", error=str(exc))

        tasks = self._tasks if owner is None else owner
        task = asyncio.create_task(guarded())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def close(self) -> None:
        """Let filing finish (bounded); unfinished rows are filed by the next engine's resync, and
        recordings still only watched are left to it at once (Asterisk keeps writing them)."""
        for watcher in list(self._watchers):
            watcher.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=20)
        for task in list(self._tasks):
            task.cancel()


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    # Personal data: readable by the service user only (like the privacy export).
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
