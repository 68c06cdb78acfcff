"""The event loop's health: how late it wakes up (lag, sampled continuously into a histogram for
/metrics), which callback held it when it was late by more than ``hold_warn_s``, and how long the
garbage collector paused it.

The loop side is one timer every ``interval_s``: its lateness is the lag every call on this loop
feels. The naming side is a watcher thread that sleeps until the next tick is overdue by
``hold_warn_s``; only then does it look at the loop thread's Python stack (``sys._current_frames``),
every ``sample_s``, until the loop ticks again, and logs ``event_loop_held`` with the callback it
saw (the coroutine's qualified name for a task step, the function's otherwise) and the duration.
Works the same on asyncio's loop and on uvloop, whose handles cannot be wrapped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callctl.logging import get_logger

log = get_logger("callctl.loopwatch")

# Upper bounds (s) of the lag histogram: fine below 20 ms, where the goal (p99 <= 10 ms) is.
LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
                 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

# Frames of the event loop's own machinery: the callback is the first frame outside them.
_LOOP_FILES = ("asyncio/base_events.py", "asyncio/events.py", "asyncio/runners.py", "asyncio/tasks.py",
               "asyncio/selector_events.py", "asyncio/unix_events.py", "/selectors.py", "uvloop/")
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the frame is an async def's


@dataclass
class Histogram:
    """Cumulative-free counts per bucket (``bounds`` plus +Inf), their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (inf past the last bound)."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, cum in zip((*self.bounds, float("inf")), self.cumulative(), strict=True):
            if cum >= rank:
                return bound
        return float("inf")


def describe_stack(frame: types.FrameType | None) -> tuple[str, str]:
    """(the callback, where it is now) for the loop thread's current ``frame``: the outermost frame
    that is not the loop's machinery (a coroutine's or function's qualified name), and the innermost
    frame as file:line function."""
    frames: list[types.FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    if not frames:
        return "idle", ""
    inner = frames[0]
    where = f"{inner.f_code.co_filename.rsplit('/', 2)[-1]}:{inner.f_lineno} {inner.f_code.co_qualname}"
    outer_first = frames[::-1]
    # The callback is the frame just inside the innermost frame of the loop's machinery (what ran
    # the loop: asyncio.run, uvloop.run, then the loop's Python or Cython frames).
    last_loop = max((i for i, f in enumerate(outer_first) if any(p in f.f_code.co_filename for p in _LOOP_FILES)),
                    default=-1)
    if last_loop + 1 >= len(outer_first):
        return "idle", where  # in the loop's own code: waiting for I/O or between callbacks
    f = outer_first[last_loop + 1]
    kind = "coroutine" if f.f_code.co_flags & _CO_COROUTINE else "function"
    return f"{kind} {f.f_code.co_qualname} ({f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_code.co_firstlineno})", where


class LoopWatch:
    """Owns the lag timer, the watcher thread and the GC timing; ``async with`` it on the loop."""

    def __init__(self, interval_s: float = 0.05, hold_warn_s: float = 0.02, sample_s: float = 0.005,
                 on_held: Callable[[str, float, str], None] | None = None) -> None:
        self.interval_s = interval_s
        self.hold_warn_s = hold_warn_s
        self.sample_s = sample_s
        self.lag = Histogram(LAG_BUCKETS_S)
        self.gc_pauses = Histogram(LAG_BUCKETS_S)
        self.last_s = 0.0
        self.max_s = 0.0
        self.held_total = 0
        self._on_held = on_held
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # loop.time() the next tick is due
        self._tick_seq = 0
        self._tick_mono = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gc_started = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> LoopWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._due = self._loop.time() + self.interval_s
        self._tick_mono = time.monotonic()
        self._handle = self._loop.call_at(self._due, self._tick)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loopwatch", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._gc_callback)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_callback)

    # -- the loop side -------------------------------------------------------------------------

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._due)
        self.last_s = lag
        self.max_s = max(self.max_s, lag)
        self.lag.observe(lag)
        self._tick_mono = time.monotonic()
        self._tick_seq += 1
        self._due = now + self.interval_s
        self._handle = self._loop.call_at(self._due, self._tick)

    # -- the watcher thread --------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            seq, ticked = self._tick_seq, self._tick_mono
            overdue_at = ticked + self.interval_s + self.hold_warn_s
            wait = overdue_at - time.monotonic()
            if wait > 0:
                if self._stop.wait(wait):
                    return
                if self._tick_seq != seq:
                    continue
            self._name_the_holder(seq, ticked)

    def _name_the_holder(self, seq: int, ticked: float) -> None:
        """The loop is late by more than hold_warn_s: sample its stack until it ticks again."""
        seen: dict[str, int] = {}
        where = ""
        while self._tick_seq == seq and not self._stop.is_set():
            frame = sys._current_frames().get(self._loop_thread)
            callback, at = describe_stack(frame)
            if callback != "idle":
                seen[callback] = seen.get(callback, 0) + 1
                where = at if seen[callback] >= max(seen.values()) else where
            time.sleep(self.sample_s)
        held_s = time.monotonic() - ticked - self.interval_s
        if not seen or held_s <= self.hold_warn_s:
            return
        callback = max(seen, key=lambda k: seen[k])
        self.held_total += 1
        log.warning("event_loop_held", callback=callback, held_ms=round(held_s * 1000, 1), at=where,
                    others=sorted(k for k in seen if k != callback)[:3] or None)
        if self._on_held is not None:
            self._on_held(callback, held_s, where)

    # -- garbage collection --------------------------------------------------------------------

    def _gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pauses.observe(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0


def freeze_startup_objects() -> int:
    """Move everything alive after start-up (modules, settings, dialplan) out of the collector's
    reach: later collections stop re-walking them, which shortens every GC pause. Returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
