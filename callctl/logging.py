"""structlog set-up: the daemon's JSON lines on stdout for journald (readable lines on a terminal);
one-shot commands log to stderr, so what they print on stdout (JSON) is only their answer."""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import json as stdlib_json
import logging
import sys
import threading
import time
from typing import Any, Protocol, TextIO, cast

import orjson
import structlog


class Stream(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...

    def isatty(self) -> bool: ...


class TurnBatchedStream:
    """Log lines written once per event-loop turn: lines logged by callbacks of one turn are joined
    and written (and flushed) together by a callback scheduled at the first of them, instead of a
    write and a flush per line. Outside the loop's thread, or with no loop running, a line is
    written at once; what is left at exit is written then."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._lines: list[str] = []
        atexit.register(self.drain)

    def write(self, text: str, /) -> int:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or loop.is_closed():
            self.drain()
            written = self._stream.write(text)
            return written
        if not self._lines:
            loop.call_soon(self.drain)
        self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        """Called by the logger after each line: the turn's callback flushes instead (or now, off the loop)."""
        if threading.current_thread() is not threading.main_thread() or not self._lines:
            with _suppress_closed():
                self._stream.flush()

    def drain(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        with _suppress_closed():
            self._stream.write("".join(lines))
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class _suppress_closed:
    """A log line to a closed stream (a test's capture after it ended) is dropped, not raised."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return kind is ValueError


class Throttle:
    """At most ``per_s`` lines a second of one diagnostic event (a slow request, a slow join): when the
    whole engine is slow (a saturated machine) those would otherwise add a log line per call and slow it
    further. What is left out is counted and said by the next line written (``unlogged``)."""

    def __init__(self, per_s: int = 5) -> None:
        self._per_s = per_s
        self._window_at = float("-inf")
        self._written = 0
        self._unlogged = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window_at >= 1.0:
            self._window_at, self._written = now, 0
        if self._written >= self._per_s:
            self._unlogged += 1
            return False
        self._written += 1
        return True

    def unlogged(self) -> int | None:
        """How many were left out since the last line (None: none), and start counting again."""
        n, self._unlogged = self._unlogged, 0
        return n or None


def _iso_utc_ms(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["ts"] = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event_dict


def _dumps(obj: Any, **kw: Any) -> str:
    """orjson (several times faster than json.dumps: every log line goes through it); what it
    refuses (an int beyond 64 bits) goes through the stdlib, so a log call never raises."""
    default = kw.get("default")
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return stdlib_json.dumps(obj, default=default if default is not None else repr)


def configure(level: str = "info", *, json: bool | None = None, stream: Stream | None = None,
              cache: bool = True, batched: bool = False) -> None:
    """Configure structlog once for the process. Log lines go to ``stream`` (default stdout: the
    daemon's journal); ``json`` defaults to "``stream`` is not a TTY".

    Loggers are cached on first use and levels below ``level`` are filtered by the bound logger's
    class itself (its methods for them do nothing), so a filtered-out call costs one method call.
    ``batched``: lines of one event-loop turn written together (the daemon, TurnBatchedStream)."""
    stream = sys.stdout if stream is None else stream
    if batched:
        stream = TurnBatchedStream(stream)
    if json is None:
        json = not stream.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _iso_utc_ms,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, stream)),  # write and flush only
        cache_logger_on_first_use=cache,
    )
    # Libraries that use stdlib logging (aiohttp, asyncpg, asyncio's own reports) only speak up for
    # warnings, on stderr, rendered like every other line: JSON for journald, nothing in plain text.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (loggers are cached: a stream captured at
    configure time could be closed by then, e.g. a test's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_command(level: str = "info") -> None:
    """Logging for a one-shot command (everything but ``callctl run``): log lines on stderr, never
    mixed into the answer the command prints on stdout."""
    configure(level, stream=_Stderr(), cache=False)  # a command logs little; nothing stays bound to it


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
