"""The durable local CDR spool: append-only segments of PostgreSQL COPY text lines (callctl.cdr.copyline),
fsync'ed before a record counts as kept, acknowledged once PostgreSQL holds it, replayed at start.
Blocking I/O: call it from a thread.

Layout of ``spool_dir``: ``cdr-<seq>.copy`` segments (a new one per start and whenever the active one
passes ``segment_max_bytes``), ``ack.json`` = the acknowledged prefix ({"segment": seq, "lines": n}:
every segment before seq and the first n lines of seq are in PostgreSQL), ``rejected.jsonl`` =
records PostgreSQL refused as malformed (kept for an operator, never retried). ``cdr-<seq>.jsonl``
segments (one JSON object a line) are what versions before the COPY format wrote: they are still
replayed, and numbered in the same sequence.

The ack file is replaced atomically but not fsync'ed: losing an ack only means replaying rows that
PostgreSQL already holds, and the idempotent insert skips them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import structlog

from callctl.cdr import copyline
from callctl.cdr.record import CdrRecord
from callctl.errors import SpoolError

log = structlog.get_logger("callctl.cdr.spool")

SEGMENT = re.compile(r"^cdr-(\d{12})\.(copy|jsonl)$")
SUFFIX = "copy"
OLD_SUFFIX = "jsonl"  # JSON lines, written before the COPY format: read, never written
ACK_FILE = "ack.json"
LOCK_FILE = ".lock"
REJECTED_FILE = "rejected.jsonl"
DEFAULT_SEGMENT_MAX_BYTES = 4 * 1024 * 1024


def _read_copy(raw: bytes) -> tuple[CdrRecord, bytes]:
    return copyline.decode(raw), raw + b"\n"


def _read_json(raw: bytes) -> tuple[CdrRecord, bytes]:
    record = CdrRecord.from_json(orjson.loads(raw))
    return record, copyline.encode(record)


_READERS = {SUFFIX: _read_copy, OLD_SUFFIX: _read_json}


class Position(NamedTuple):
    """Where a record sits in the spool: segment number and 0-based line (ordered as a tuple). A tuple, not a
    frozen dataclass: one is made per record spooled (the dataclass's __init__ took 12 % of the writer's CPU)."""

    segment: int
    line: int


def _segment_name(seq: int, suffix: str = SUFFIX) -> str:
    return f"cdr-{seq:012d}.{suffix}"


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    return f"{reason} ({name})" if name else reason


class Spool:
    """Thread-safe: appends (from the writer's spool task) and acks (from its store task) may overlap."""

    def __init__(self, directory: Path, *, segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq = 0  # active segment
        self._lines = 0  # lines in the active segment
        self._size = 0
        self._acked: Position | None = None
        self._closed: set[int] = set()  # rolled segments still holding unacknowledged lines
        self._segment_lines: dict[int, int] = {}
        self._suffixes: dict[int, str] = {}  # segments of the old format found at replay
        self._lock_fd: int | None = None

    # -- start ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, *, segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
             exclusive: bool = True) -> Spool:
        """Check the directory is usable (creating it if needed); SpoolError names the path and errno.

        ``exclusive``: hold a lock on the directory until ``close`` (two writers on one spool would
        delete each other's segments).
        """
        spool = cls(directory, segment_max_bytes=segment_max_bytes)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"CDR spool {directory}: cannot create the directory: {_describe(exc)}: "
                             "fix spool_dir (CALLCTL_SPOOL_DIR) or its permissions") from None
        probe = directory / ".write-test"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"x")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise SpoolError(f"CDR spool {directory}: cannot write there: {_describe(exc)}: fix spool_dir "
                             "(CALLCTL_SPOOL_DIR), its permissions or free space") from None
        if exclusive:
            spool._take_lock()
        # Never reuse a segment number the ack file may still cover: that would hide new records.
        acked = spool._read_ack()
        newest = max([*(seq for seq, _ in spool._segments()), acked.segment if acked else 0])
        spool._seq = newest + 1
        return spool

    def _path(self, seq: int) -> Path:
        return self.directory / _segment_name(seq, self._suffixes.get(seq, SUFFIX))

    def _take_lock(self) -> None:
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"CDR spool {path}: cannot create the lock file: {_describe(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(f"CDR spool {self.directory} is in use by another process: give each callctl "
                             "its own spool_dir (CALLCTL_SPOOL_DIR)") from None
        self._lock_fd = fd

    def _segments(self) -> list[tuple[int, str]]:
        """(seq, suffix) of every segment on disk, in order."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise SpoolError(f"CDR spool {self.directory}: cannot list: {_describe(exc)}") from None
        return sorted((int(m.group(1)), m.group(2)) for n in names if (m := SEGMENT.match(n)))

    def _read_ack(self) -> Position | None:
        path = self.directory / ACK_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Position(int(data["segment"]), int(data["lines"]) - 1)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Without a readable ack everything is replayed; the idempotent insert skips stored rows.
            log.warning("cdr_spool_ack_unreadable", path=str(path), error=str(exc))
            return None

    def replay(self) -> list[tuple[Position, CdrRecord, bytes]]:
        """Every record spooled by earlier runs and not acknowledged, in spool order, with its COPY line
        (the spooled bytes; encoded here for a segment of the old JSON-lines format).

        A torn last line (the process died mid-append: that record was never reported durable) is
        skipped with a warning naming file:line, even when it happens to decode (a cut number still
        reads as a number); so is any other undecodable line.
        """
        acked = self._read_ack()
        out: list[tuple[Position, CdrRecord, bytes]] = []
        for seq, suffix in self._segments():
            if seq >= self._seq:
                continue
            self._suffixes[seq] = suffix
            path = self._path(seq)
            if acked is not None and seq < acked.segment:
                self._unlink(path)
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SpoolError(f"CDR spool {path}: cannot read: {_describe(exc)}") from None
            lines = data.split(b"\n")
            torn_tail = lines[-1] != b""
            if not torn_tail:
                lines.pop()
            read = _READERS[suffix]
            kept = 0
            last = -1
            for index, raw in enumerate(lines):
                position = Position(seq, index)
                if acked is not None and position <= acked:
                    continue
                try:
                    if torn_tail and index == len(lines) - 1:
                        raise ValueError("no newline at the end of the segment")
                    record, line = read(raw)
                except (ValueError, TypeError, KeyError) as exc:
                    what = "torn last line" if torn_tail and index == len(lines) - 1 else "undecodable line"
                    log.warning("cdr_spool_line_skipped", where=f"{path}:{index + 1}", reason=what,
                                error=str(exc)[:200])
                    continue
                out.append((position, record, line))
                kept += 1
                last = index
            self._segment_lines[seq] = last + 1
            if kept:
                self._closed.add(seq)
            else:
                self._unlink(path)
        return out

    # -- append --------------------------------------------------------------------------------
    def append(self, records: Sequence[CdrRecord]) -> list[Position]:
        """``append_lines`` of the records' COPY lines."""
        return self.append_lines([copyline.encode(r) for r in records])

    def append_lines(self, lines: Sequence[bytes]) -> list[Position]:
        """Write and fsync ``lines`` (``copyline.encode`` lines); on return they survive a crash. SpoolError
        on any failure (the segment is truncated back, so a failed append leaves no partial line behind)."""
        if not lines:
            return []
        payload = b"".join(lines)
        with self._lock:
            new_segment = self._fd is None
            path = self._path(self._seq)
            try:
                if self._fd is None:
                    self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    self._size = os.fstat(self._fd).st_size
            except OSError as exc:
                raise SpoolError(f"CDR spool {path}: cannot create segment: {_describe(exc)}: free space "
                                 "or fix permissions; records are kept in memory meanwhile") from None
            try:
                view = memoryview(payload)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
                if new_segment:
                    self._fsync_dir()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                raise SpoolError(f"CDR spool {path}: cannot write: {_describe(exc)}: free space or fix "
                                 "permissions; records are kept in memory meanwhile") from None
            first = self._lines
            self._lines += len(lines)
            self._size += len(payload)
            positions = [Position(self._seq, first + i) for i in range(len(lines))]
            if self._size >= self.segment_max_bytes:
                self._roll()
            return positions

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _roll(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._segment_lines[self._seq] = self._lines
        self._closed.add(self._seq)
        self._seq += 1
        self._lines = 0
        self._size = 0
        self._drop_acknowledged()

    # -- acknowledge ---------------------------------------------------------------------------
    def ack(self, upto: Position) -> None:
        """Records up to and including ``upto`` are in PostgreSQL: forget them."""
        with self._lock:
            if self._acked is not None and upto <= self._acked:
                return
            self._acked = upto
            self._write_ack(upto)
            self._drop_acknowledged()

    def _write_ack(self, upto: Position) -> None:
        path = self.directory / ACK_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"segment": upto.segment, "lines": upto.line + 1}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cdr_spool_ack_unwritable", path=str(path), error=_describe(exc))

    def _drop_acknowledged(self) -> None:
        if self._acked is None:
            return
        for seq in sorted(self._closed):
            if seq < self._acked.segment or (seq == self._acked.segment
                                               and self._acked.line + 1 >= self._segment_lines.get(seq, 0)):
                self._unlink(self._path(seq))
                self._closed.discard(seq)

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cdr_spool_unlink_failed", path=str(path), error=_describe(exc))

    # -- rejected ------------------------------------------------------------------------------
    def reject(self, record: CdrRecord, reason: str) -> None:
        """Keep a record PostgreSQL refused (malformed) or that cannot be encoded aside for an operator, fsync'ed."""
        path = self.directory / REJECTED_FILE
        try:
            text = json.dumps({"reason": reason, "record": record.to_json()}, default=str)
        except (TypeError, ValueError):  # e.g. a circular ``extra``: keep what repr() shows
            text = json.dumps({"reason": reason, "record": repr(record)})
        line = text.encode() + b"\n"
        with self._lock:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SpoolError(f"CDR spool {path}: cannot write: {_describe(exc)}") from None

    # -- stop ----------------------------------------------------------------------------------
    def close(self, *, all_acked: bool) -> None:
        """Close the active segment; when everything is acknowledged, leave an empty spool behind."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            if all_acked:
                for seq in [*self._closed, self._seq]:
                    self._unlink(self._path(seq))
                self._closed.clear()
                self._unlink(self.directory / ACK_FILE)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def stats(self) -> dict[str, Any]:
        return {"segment": self._seq, "lines": self._lines, "size": self._size,
                "closed": sorted(self._closed), "acked": self._acked}
