"""The CDR writer: takes records from calls without ever waiting, makes them durable in the local spool
first, then batches them into PostgreSQL idempotently. A database outage never stalls or loses a record.

A thread and a task, so a slow database never delays the spool:
    submit() -> incoming (memory) -> spool thread: encode as COPY lines + append + fsync -> pending
    pending -> store task: COPY of those same bytes (idempotent, see CdrStore) -> ack (spool thread)
The spool thread is the writer's own (not the default executor, shared with other work): it takes
records straight from ``incoming`` and writes the acks the store task queues, so a batch costs one
wake-up of that thread and one of the event loop. Each record is encoded once (callctl.cdr.copyline),
in that thread: the line fsync'ed in the spool is the line sent.
Shutdown (``__aexit__``): spool what is still in memory, drain to PostgreSQL up to ``drain_grace_s``,
leave the rest in the spool for the next start.

The writer talks to PostgreSQL only through the ``CdrStore`` protocol (``callctl.store.cdrs.PgCdrStore``
in production, a fake in unit tests): no asyncpg below this line, directly or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import structlog

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from callctl.cdr.spool import DEFAULT_SEGMENT_MAX_BYTES, Position, Spool
from callctl.errors import SpoolError, StoreError, StoreUnavailable

log = structlog.get_logger("callctl.cdr.writer")

SPOOL_BATCH_MAX = 5000  # records per append+fsync
# While PostgreSQL has nothing to do, the spool takes at most this many records at once, and the store task
# sends as soon as it holds this many (no batching window): a burst after an idle time (a replay, a busy
# minute) reaches PostgreSQL after one small fsync instead of after the first 5,000 are encoded and fsync'ed.
# Later batches grow by themselves (whatever arrived while PostgreSQL took the previous one).
BATCH_START = 500
SPOOL_JOIN_S = 10.0  # at close, the spool thread's last append (an fsync stuck on a dead disk) is waited this long
RETRY_MIN_S = 0.1
# The spool's ack file is rewritten at most this often (and when the writer goes idle or closes): a lost
# ack only replays rows PostgreSQL already holds (skipped), so acking every batch bought nothing but a
# file rewrite and a thread hand-off per batch (one per call or two at a few calls a second).
ACK_INTERVAL_S = 1.0

# (spool position, record, its COPY line). Position None: the spool was unwritable, memory only.
Item = tuple[Position | None, CdrRecord, bytes]


class CdrStore(Protocol):
    """Where records end up. ``insert`` writes ``lines`` (``copyline.encode`` of ``records``, one each, as
    spooled) idempotently (a leg already stored is skipped) and returns the rows added; it raises
    StoreUnavailable (retry later) or StoreError (a record is malformed)."""

    description: str

    async def connect(self) -> None: ...

    async def insert(self, records: Sequence[CdrRecord], lines: Sequence[bytes]) -> int: ...

    async def close(self) -> None: ...


class CdrWriter:
    """``async with CdrWriter(url, spool_dir) as w: w.submit(record)``; starts with PostgreSQL down."""

    def __init__(self, database_url: str, spool_dir: Path, *, batch_max: int = 5000, flush_interval_s: float = 0.05,
                 retry_max_s: float = 2.0, drain_grace_s: float = 5.0,
                 segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES, ack_interval_s: float = ACK_INTERVAL_S,
                 store_factory: Callable[[str], CdrStore],
                 on_submit: Callable[[CdrRecord], None] | None = None) -> None:
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self.database_url = database_url
        self.spool_dir = spool_dir
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self.drain_grace_s = drain_grace_s
        self.ack_interval_s = ack_interval_s
        self._segment_max_bytes = segment_max_bytes
        self._spool: Spool | None = None
        self._incoming: collections.deque[CdrRecord] = collections.deque()
        # Records taken from incoming by the spool thread, and those of them handed to ``pending`` by the loop:
        # one writer each, so neither count loses an update; taken - handed are being spooled.
        self._taken = 0
        self._handed = 0
        self._pending: collections.deque[Item] = collections.deque()
        self._pending_ready = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._store = store_factory(database_url)
        self._store_up = False
        self._down_since: float | None = None
        self._spool_ok = True
        self._closing = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        # The spool thread: woken by ``_wake`` for records in ``_incoming`` or positions in ``_acks``.
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._acks: collections.deque[Position] = collections.deque()
        self._stop_thread = False  # set by close: the thread spools what is in memory, acks, and ends
        self._thread_done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unacked: Position | None = None  # stored in PostgreSQL, its ack not yet written
        self._next_ack_at = 0.0  # loop time
        self._inserting = False  # a batch is on its way to PostgreSQL
        self._fill_target = min(batch_max, BATCH_START)  # pending records that end the batching window
        self.written_total = 0
        self.skipped_total = 0  # already in PostgreSQL (a replay after a lost ack)
        self._on_submit = on_submit  # sees every record handed over (metrics), whoever built it
        # Told of the records each append made durable in the spool (the open-calls journal closes their calls
        # then, not before: a call closed in the journal has its CDR on disk). Not told of records kept in
        # memory only (spool unwritable).
        self.on_spooled: Callable[[Sequence[CdrRecord]], None] | None = None

    # -- the call side -------------------------------------------------------------------------
    def submit(self, record: CdrRecord) -> None:
        """Hand a record over; never blocks, never raises for a database or disk problem."""
        if self._on_submit is not None:
            self._on_submit(record)
        if self._closed:
            self._submit_after_close(record)
            return
        self._incoming.append(record)
        self._drained.clear()
        if not self._wake.is_set():  # set() takes a lock; the thread clears the flag before it looks at incoming
            self._wake.set()

    @property
    def queue_depth(self) -> int:
        """Records not yet in PostgreSQL (in memory or in the spool)."""
        return len(self._incoming) + (self._taken - self._handed) + len(self._pending)

    @property
    def store_up(self) -> bool:
        return self._store_up

    async def wait_for_drained(self, timeout_s: float) -> bool:
        """True once every submitted record is in PostgreSQL; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.queue_depth:
                    await self._drained.wait()
        except TimeoutError:
            return False
        return True

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> CdrWriter:
        self._spool = await asyncio.to_thread(Spool.open, self.spool_dir,
                                              segment_max_bytes=self._segment_max_bytes)
        replayed = await asyncio.to_thread(self._spool.replay)
        if replayed:
            self._pending.extend(replayed)
            self._pending_ready.set()
            self._drained.clear()
            log.info("cdr_spool_replayed", records=len(replayed), spool=str(self.spool_dir))
        self._loop = asyncio.get_running_loop()
        self._thread_done = self._loop.create_future()
        self._thread = threading.Thread(target=self._spool_thread, name="cdr-spool", daemon=True)
        self._thread.start()
        self._tasks = [asyncio.create_task(self._store_loop(), name="cdr-store")]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close(self.drain_grace_s)

    async def close(self, drain_grace_s: float) -> None:
        if self._closed or self._spool is None:
            self._closed = True
            return
        self._closing = True
        self._pending_ready.set()
        self._batch_full.set()
        drained = await self.wait_for_drained(drain_grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ack_if_due(now=True)
        # The thread spools what is still in memory, writes that last ack, and ends; an fsync stuck on a
        # dead disk is bounded.
        self._stop_thread = True
        self._wake.set()
        assert self._thread_done is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._thread_done), SPOOL_JOIN_S)
        self._closed = True
        await self._store.close()
        await asyncio.to_thread(self._save_memory_only)
        depth = self.queue_depth
        self._spool.close(all_acked=depth == 0)
        if not drained:
            log.warning("cdr_left_in_spool", records=depth, spool=str(self.spool_dir),
                        hint="replayed into PostgreSQL at the next start")

    def _save_memory_only(self) -> None:
        """Last chance for records the spool could not take while running: spool them, else log them."""
        assert self._spool is not None
        loose = [(r, line) for p, r, line in self._pending if p is None]
        loose += self._encode(list(self._incoming))
        if not loose:
            return
        try:
            self._spool.append_lines([line for _, line in loose])
        except SpoolError as exc:
            for record, _ in loose:
                log.error("cdr_record_unsaved", error=exc.message, record=record.to_json())

    def _submit_after_close(self, record: CdrRecord) -> None:
        # A call that ends after the writer closed (should not happen: calls drain first). Blocking
        # here is better than losing the record; the next start replays it.
        log.warning("cdr_submitted_after_close", leg_id=str(record.leg_id))
        try:
            assert self._spool is not None
            self._spool.append_lines([line for _, line in self._encode([record])])
        except (SpoolError, AssertionError) as exc:
            log.error("cdr_record_unsaved", error=str(exc), record=record.to_json())

    # -- spool thread --------------------------------------------------------------------------
    def _spool_thread(self) -> None:
        """The writer's own thread: acks first (cheap), then records from ``incoming`` in batches (encode,
        append + fsync); ends when close asks and memory is empty. Never raises: a bug in one batch is
        logged and its records go on from memory."""
        try:
            while True:
                self._wake.wait()
                self._wake.clear()  # before looking: a submit after this sets it again
                while self._acks or self._incoming:
                    if self._acks:
                        while self._acks:  # popleft, not clear(): one queued meanwhile is not lost
                            upto = self._acks.popleft()
                        self._ack(upto)
                    if self._incoming:
                        self._spool_batch()
                if self._stop_thread:
                    return
        finally:
            self._to_loop(self._thread_stopped)

    def _spool_batch(self) -> None:
        assert self._spool is not None
        # Read from the loop's side without a lock: a stale value only changes a batch's size.
        busy = self._inserting or len(self._pending) >= BATCH_START
        count = min(len(self._incoming), SPOOL_BATCH_MAX if busy else BATCH_START)
        self._taken += count  # counted before taken: queue_depth may only over-count meanwhile
        encoded = self._encode([self._incoming.popleft() for _ in range(count)])
        lines = [line for _, line in encoded]
        error: SpoolError | None = None
        try:
            positions: Sequence[Position | None] = self._spool.append_lines(lines)
        except SpoolError as exc:
            positions, error = [None] * len(encoded), exc
        except Exception as exc:  # a bug must not end the thread: the records go on from memory
            log.exception("cdr_spool_failed", error=repr(exc), records=len(encoded))
            positions, error = [None] * len(encoded), SpoolError(f"CDR spool {self.spool_dir}: {exc!r}")
        items = [(p, r, line) for p, (r, line) in zip(positions, encoded, strict=True)]
        self._to_loop(self._spooled, count, items, error)

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            self._loop.call_soon_threadsafe(callback, *args)

    def _spooled(self, count: int, items: list[Item], error: SpoolError | None) -> None:
        """On the loop: a batch is in the spool (or, ``error``, in memory only) and goes to the store task."""
        if error is None:
            if self.on_spooled is not None:
                self.on_spooled([record for _, record, _ in items])
            if not self._spool_ok:
                self._spool_ok = True
                log.info("cdr_spool_recovered", spool=str(self.spool_dir))
        elif self._spool_ok:
            # Keep going from memory: PostgreSQL may still take them; the shutdown retries the spool.
            self._spool_ok = False
            log.error("cdr_spool_unwritable", error=error.message)
        self._pending.extend(items)
        self._handed += count
        self._pending_ready.set()
        if len(self._pending) >= self._fill_target:
            self._batch_full.set()

    def _thread_stopped(self) -> None:
        if self._thread_done is not None and not self._thread_done.done():
            self._thread_done.set_result(None)

    def _encode(self, records: list[CdrRecord]) -> list[tuple[CdrRecord, bytes]]:
        """The records with their COPY lines; one that cannot be encoded (a bug) is set aside, not retried."""
        try:
            return [(r, copyline.encode(r)) for r in records]
        except Exception:  # find the culprit; the others go on
            encoded = []
            for record in records:
                try:
                    encoded.append((record, copyline.encode(record)))
                except Exception as exc:
                    self._set_aside(record, f"cannot encode: {exc!r}")
            return encoded

    # -- store task ----------------------------------------------------------------------------
    async def _store_loop(self) -> None:
        delay_s = 0.0
        while True:
            if delay_s:
                await asyncio.sleep(delay_s)
            if self._store_up or self._closing:
                await self._wait_for_batch(wait_to_fill=delay_s == 0.0)
            try:
                await self._write_batch()
            except StoreUnavailable as exc:
                self._went_down(exc)
                delay_s = min(max(delay_s * 2, RETRY_MIN_S), self.retry_max_s)
                continue
            except Exception as exc:  # a bug below must not end the task: the records wait in the spool
                log.exception("cdr_store_failed", error=repr(exc), spooled=self.queue_depth,
                              hint="a bug in the CDR store: records stay in the spool and are retried")
                delay_s = min(max(delay_s * 2, RETRY_MIN_S), self.retry_max_s)
                continue
            delay_s = 0.0

    async def _wait_for_batch(self, *, wait_to_fill: bool) -> None:
        while not self._pending:
            self._pending_ready.clear()
            if self._unacked is None:
                await self._pending_ready.wait()
                continue
            with contextlib.suppress(TimeoutError):  # idle: the deferred ack is written when it falls due
                async with asyncio.timeout_at(self._next_ack_at):
                    await self._pending_ready.wait()
            if not self._pending:
                self._ack_if_due(now=True)
        if (wait_to_fill and len(self._pending) < self._fill_target and self.flush_interval_s > 0
                and not self._closing):
            self._batch_full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self.flush_interval_s)

    async def _write_batch(self) -> None:
        await self._store.connect()
        if not self._pending:  # connected while idle (e.g. after an outage): nothing to write
            self._came_up(0)
            return
        batch = list(itertools.islice(self._pending, self.batch_max))
        self._inserting = True
        try:
            inserted = await self._store.insert([r for _, r, _ in batch], [line for _, _, line in batch])
        except StoreUnavailable:
            raise
        except StoreError:
            inserted = await self._write_one_by_one(batch)
        finally:
            self._inserting = False
        self._came_up(len(self._pending))
        for _ in batch:
            self._pending.popleft()
        self.written_total += inserted
        self.skipped_total += len(batch) - inserted
        last = next((p for p, _, _ in reversed(batch) if p is not None), None)
        if last is not None:
            self._unacked = last
            self._ack_if_due()
        if not self.queue_depth:
            self._drained.set()

    def _ack_if_due(self, *, now: bool = False) -> None:
        """Queue the ack of what PostgreSQL holds for the spool thread, at most every ACK_INTERVAL_S unless
        ``now``. The thread writes it while the next batch goes to PostgreSQL; acks stay in order."""
        loop = asyncio.get_running_loop()
        if self._unacked is None or (not now and loop.time() < self._next_ack_at):
            return
        upto, self._unacked = self._unacked, None
        self._next_ack_at = loop.time() + self.ack_interval_s
        self._acks.append(upto)
        self._wake.set()

    def _ack(self, upto: Position) -> None:
        assert self._spool is not None
        try:
            self._spool.ack(upto)
        except Exception as exc:  # a bug: those rows are stored, the next start skips them when it replays
            log.exception("cdr_spool_ack_failed", error=repr(exc))

    async def _write_one_by_one(self, batch: list[Item]) -> int:
        """A batch was refused for a bad row: store the good ones, set the bad ones aside."""
        inserted = 0
        for _, record, line in batch:
            try:
                inserted += await self._store.insert([record], [line])
            except StoreUnavailable:
                raise
            except StoreError as exc:
                await asyncio.to_thread(self._set_aside, record, exc.message)
        return inserted

    def _set_aside(self, record: CdrRecord, reason: str) -> None:
        """Blocking: keep a record that can never be written in rejected.jsonl, loudly."""
        assert self._spool is not None
        log.error("cdr_rejected", leg_id=str(record.leg_id), call_id=str(record.call_id), error=reason,
                  kept_in=str(self.spool_dir / "rejected.jsonl"))
        try:
            self._spool.reject(record, reason)
        except SpoolError as spool_exc:
            log.error("cdr_record_unsaved", error=spool_exc.message, record=record.to_json())

    def _went_down(self, exc: StoreUnavailable) -> None:
        if self._store_up or self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("cdr_store_unavailable", error=exc.message, database=self._store.description,
                        spooled=self.queue_depth)
        self._store_up = False

    def _came_up(self, spooled: int) -> None:
        if self._store_up:
            return
        self._store_up = True
        if self._down_since is not None:
            log.info("cdr_store_recovered", database=self._store.description, spooled=spooled,
                     down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = None
