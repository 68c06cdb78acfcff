"""The open-calls journal: which calls this engine has taken and not yet recorded.

A call that ends while no engine is connected (the engine killed, then the caller hangs up before
the next one resynchronises) leaves no trace in Asterisk. Each call is therefore written here when
it starts (and when it is answered) and struck out once its CDR is in the spool. At start,
the next engine reads the calls still open: those Asterisk no longer has are recorded with what is
known (start, answer) and an end bracketed by the last sign of life of the previous engine and
the moment of recovery.

Plain appends without fsync: the page cache survives the death of the process (kill -9, crash),
which is what this guards against; a machine crash is covered by Asterisk's own restart (every
call is gone then, and the open entries are recorded the same way).

The same entries go to PostgreSQL (``JournalMirror``, table ``open_call``) a fraction of a second
later, so no call depends on this engine's disk: an engine whose files were lost reads its node's
rows back at start, and the engines of a cluster take over the rows of a node gone for good
(docs/scaling.md, "What survives a node").

A ``close`` stays in the file until PostgreSQL has it (a ``shared`` line lists the closes a batch
carried): an engine killed in between finds the call closed in its file but open in its rows, and
must not take that row for a call that ended with no engine (its real CDR is in the local spool).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callctl.cdr.record import CdrRecord
from callctl.errors import SpoolError, StoreError, StoreUnavailable
from callctl.logging import get_logger

log = get_logger("callctl.cdr")

MIRROR_FLUSH_S = 0.2  # the journal's operations reach PostgreSQL this long after they happen, at most
MIRROR_QUEUE_MAX = 100_000  # operations kept while PostgreSQL is unreachable (the oldest dropped beyond)


@dataclass(frozen=True)
class OpenCall:
    """A journal row in PostgreSQL: the call's leg, its node, the journal's entry (as ``pending``'s), the
    time its CDR was handed to the writer (None: still open), the node's last heartbeat."""

    leg: str
    node: str
    entry: dict[str, Any]
    closed_at: dt.datetime | None
    last_seen: dt.datetime | None


class CallJournal:
    mirror: JournalMirror | None = None  # set by share()
    _unspooled: dict[str, str] | None = None  # leg -> end: closed, CDR not yet in the spool (follow_spool)

    def __init__(self, directory: Path) -> None:
        self.path = directory / "open-calls.jsonl"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.previous_activity = (dt.datetime.fromtimestamp(self.path.stat().st_mtime, dt.UTC)
                                      if self.path.exists() else None)
            # Legs closed in the file whose close PostgreSQL has not confirmed: leg -> close time.
            self.unshared_closes: dict[str, str] = {}
            self.pending = self._read()
            self._compact(self.pending)
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise SpoolError(f"{self.path}: cannot use the open-calls journal: {exc.strerror}") from None

    def _read(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            item = self._read_line(line)
            if item is None:
                continue
            leg = item.get("leg")
            if not isinstance(leg, str):
                continue
            if item.get("op") == "open":
                entries[leg] = item
                self.unshared_closes.pop(leg, None)
            elif item.get("op") == "answer" and leg in entries:
                entries[leg]["answered_at"] = item.get("at")
            elif item.get("op") == "dial" and leg in entries:
                entries[leg].setdefault("dialled", []).append(item.get("channel"))
            elif item.get("op") == "close":
                entries.pop(leg, None)
                self.unshared_closes[leg] = str(item.get("at") or "")
        return entries

    def _read_line(self, line: str) -> dict[str, Any] | None:
        try:
            item = json.loads(line)
        except ValueError:
            return None  # a torn last line after a crash
        if not isinstance(item, dict):
            return None
        if item.get("op") == "shared":  # these closes are in PostgreSQL: nothing left to remember
            for leg in item.get("legs") or ():
                self.unshared_closes.pop(leg, None)
            return None
        return item

    def _compact(self, keep: dict[str, dict[str, Any]]) -> None:
        """The file rewritten with what is still open and the closes PostgreSQL has not confirmed."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for entry in keep.values():
                out.write(json.dumps(entry) + "\n")
            for leg, at in self.unshared_closes.items():
                out.write(json.dumps({"op": "close", "leg": leg, "at": at}) + "\n")
        os.replace(tmp, self.path)

    def _write(self, item: dict[str, Any]) -> None:
        if self.mirror is not None:
            self.mirror.push(item)
        try:
            self._file.write(json.dumps(item) + "\n")
            self._file.flush()
        except (OSError, ValueError):
            pass  # the journal is a safety net: a full disk must not stop calls (the spool says it loudly)

    def opened(self, leg: str, **facts: Any) -> None:
        if leg in self.pending:  # adopted after a restart: already open
            return
        self._write({"op": "open", "leg": leg, **facts})

    def answered(self, leg: str, at: dt.datetime) -> None:
        self._write({"op": "answer", "leg": leg, "at": at.isoformat()})

    def dialled(self, leg: str, channel: str) -> None:
        """The call is about to originate ``channel`` (a leg): a next engine can find the attempt."""
        self._write({"op": "dial", "leg": leg, "channel": channel})

    def closed(self, leg: str) -> None:
        """The call's CDR was handed to the writer. Its ``close`` is written now, or, once ``follow_spool``
        was called, when the writer says the CDR is in the spool (``spooled``)."""
        self.pending.pop(leg, None)
        if self._unspooled is not None:
            self._unspooled[leg] = dt.datetime.now(dt.UTC).isoformat()
            return
        self._write({"op": "close", "leg": leg, "at": dt.datetime.now(dt.UTC).isoformat()})

    def follow_spool(self) -> Callable[[Sequence[CdrRecord]], None]:
        """From now on a call's ``close`` waits for its CDR to be durable in the spool; returns what the
        writer calls with the records of each append (``CdrWriter.on_spooled``). An engine killed between
        the end of a call and the fsync of its CDR (milliseconds) thus leaves the call open here, and the
        next engine records it (an incomplete CDR, replaced by the real one if that reached PostgreSQL)
        instead of nothing at all."""
        self._unspooled = {}
        return self.spooled

    def spooled(self, records: Sequence[CdrRecord]) -> None:
        if not self._unspooled:
            return
        for record in records:
            at = self._unspooled.pop(str(record.leg_id), None)
            if at is not None:
                self._write({"op": "close", "leg": str(record.leg_id), "at": at})

    def shared(self, ops: Sequence[dict[str, Any]]) -> None:
        """PostgreSQL took ``ops`` (the mirror's batch): their closes need not be kept across a restart."""
        legs = [op["leg"] for op in ops if op.get("op") == "close"]
        if not legs:
            return
        for leg in legs:
            self.unshared_closes.pop(leg, None)
        try:
            self._file.write(json.dumps({"op": "shared", "legs": legs}) + "\n")
            self._file.flush()
        except (OSError, ValueError):
            pass  # the closes are sent again at the next start: harmless

    @property
    def lost_its_file(self) -> bool:
        """No journal file was found at start: a first start, or this engine's disk state is gone."""
        return self.previous_activity is None

    def share(self, mirror: JournalMirror) -> None:
        """From now on every entry also goes to PostgreSQL; the entries still open are sent again, and so
        are the closes a previous engine wrote here but PostgreSQL never got (its row says still open)."""
        self.mirror = mirror
        mirror.on_shared = self.shared
        for entry in self.pending.values():
            mirror.push({"op": "open", **entry})
        for leg, at in self.unshared_closes.items():
            mirror.push({"op": "close", "leg": leg, "at": at})

    def adopt_rows(self, rows: Sequence[OpenCall]) -> int:
        """Rows of this node in PostgreSQL the file does not have (it was lost): open again here, for the
        resynchronisation to adopt or record. A closed row (its CDR handed to a writer whose spool went
        with the disk) is recorded too: its end is known. Returns how many were added."""
        added = 0
        for row in rows:
            if row.leg in self.pending or row.leg in self.unshared_closes:
                # Closed here: its CDR is in this disk's spool. Its close had not reached PostgreSQL when
                # the previous engine died (``share`` sends it): recording it again would make a second,
                # "incomplete" CDR of the same leg.
                continue
            if row.closed_at is not None and not self.lost_its_file:
                continue  # the spool on this disk still has its CDR
            entry = dict(row.entry)
            if row.closed_at is not None:
                entry["closed_at"] = row.closed_at.isoformat()
            self.pending[row.leg] = entry
            added += 1
        if added:
            seen = [r.last_seen for r in rows if r.last_seen is not None]
            if self.previous_activity is None and seen:
                self.previous_activity = max(seen)  # the node's last heartbeat: the earliest end possible
        return added

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class JournalStore:
    """The SQL of the journal's rows (callctl.store.journal), bound to a pool by the composition root."""

    apply: Callable[[str, Sequence[dict[str, Any]]], Awaitable[None]]  # node, operations in order
    node_calls: Callable[[str], Awaitable[list[OpenCall]]]  # node -> its rows without a CDR in PostgreSQL
    drop_recorded: Callable[[], Awaitable[int]]  # delete closed rows whose CDR is in PostgreSQL
    claim_dead_nodes: Callable[[str, float], Awaitable[list[OpenCall]]]  # node, takeover_s -> rows taken


class JournalMirror:
    """Sends the journal's operations to PostgreSQL in batches (``MIRROR_FLUSH_S``); kept in memory in
    order while PostgreSQL is unreachable. Every ``takeover_every_s`` it deletes the rows whose CDR is in
    PostgreSQL and takes over the rows of nodes dead for ``takeover_s`` (handed to ``orphans``)."""

    def __init__(self, store: JournalStore, node: str, *, takeover_s: float,
                 orphans: Callable[[Sequence[OpenCall]], None], takeover_every_s: float = 5.0) -> None:
        self._store = store
        self._node = node
        self._takeover_s = takeover_s
        self._takeover_every_s = takeover_every_s
        self._orphans = orphans
        self._ops: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._failing = False
        self.dropped = 0
        self.on_shared: Callable[[Sequence[dict[str, Any]]], None] | None = None  # told of each batch taken

    def push(self, item: dict[str, Any]) -> None:
        if len(self._ops) >= MIRROR_QUEUE_MAX:
            self._ops.pop(0)
            self.dropped += 1
        self._ops.append(item)
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._ops)

    async def load(self, journal: CallJournal) -> int:
        """Read this node's rows back into ``journal`` (see ``CallJournal.adopt_rows``)."""
        added = journal.adopt_rows(await self._store.node_calls(self._node))
        if added:
            log.warning("open_calls_read_from_database", calls=added, file_lost=journal.lost_its_file)
        return added

    async def flush(self) -> bool:
        """Send what is queued; False when PostgreSQL could not take it (kept for the next try)."""
        if not self._ops:
            return True
        batch = list(self._ops)
        try:
            await self._store.apply(self._node, batch)
        except StoreUnavailable as exc:
            if not self._failing:
                log.warning("open_calls_journal_not_shared", error=exc.message, queued=len(batch))
            self._failing = True
            return False
        except StoreError as exc:  # a row PostgreSQL refuses: never retried forever (the file keeps it)
            log.error("open_calls_journal_batch_refused", error=exc.message, operations=len(batch))
        else:
            if self.on_shared is not None:
                self.on_shared(batch)
        del self._ops[:len(batch)]
        if self._failing:
            log.info("open_calls_journal_shared_again")
        self._failing = False
        return True

    async def upkeep(self) -> None:
        """Drop the rows whose CDR is in; take over dead nodes' rows."""
        try:
            await self._store.drop_recorded()
            taken = await self._store.claim_dead_nodes(self._node, self._takeover_s)
        except StoreError:
            return  # said by flush; tried again at the next round
        if taken:
            log.warning("open_calls_of_dead_nodes_taken_over", calls=len(taken),
                        nodes=sorted({row.node for row in taken}))
            self._orphans(taken)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_upkeep = loop.time()
        while True:
            await self.flush()
            if loop.time() >= next_upkeep:
                await self.upkeep()
                next_upkeep = loop.time() + self._takeover_every_s
            self._wake.clear()
            await asyncio.sleep(MIRROR_FLUSH_S)
            if not self._ops:
                try:
                    async with asyncio.timeout(max(0.0, next_upkeep - loop.time())):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def close(self) -> None:
        """A last flush at shutdown (what cannot be sent is in the local file)."""
        await self.flush()
