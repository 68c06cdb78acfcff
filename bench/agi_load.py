"""The FastAGI gate's open-loop load: Asterisk's side of ``--rate`` sessions a second, lean enough that
the latency it prints is the gate's and not its own queue (issue 17, fourth round).

Several client processes (``--clients``, pinned to the CPUs the server is not on), each on uvloop with
one ``asyncio.Protocol`` per session and its request bytes built before the run. Session ``i`` is due
at ``start + i / rate`` (``time.monotonic``, one clock for every process; process ``k`` of ``K`` takes
``i = k, k + K, ...``), so the schedule never drifts: a session started late is late by its own start,
not by the ones before it. Per session: the start lag (connect called minus due: the client's own
lateness), and the latency from due to the server's close (the client's ``eof_received``), the figure
the goal reads. Each process also reports its CPU time over the run, so a reader sees the client's
share of its CPU beside the p99.

    python -m bench.agi_load --port P --account ID --rate 2000 --seconds 5 --index 0 --of 2 [--plain]

prints ``ready`` once built, reads the start time (monotonic seconds) on stdin, then prints one JSON
line with its figures. ``bench.agi_gate`` runs it; not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

HOST = "127.0.0.1"
CALLER = "+33170000001"
EXTENSION = "0123456789"
AGI_VERSION = "agi_version: 22.10.1\n"  # real Asterisk names its version; the server then answers with MSet
ALLOWED_MSET = b"CALLCTL_GATE=allow,"
ALLOWED_SET = b'SET VARIABLE CALLCTL_GATE "allow"'


def dialled(i: int, distinct: bool) -> str:
    """The number request ``i`` dials: always the same one, or (``distinct``) a different French number
    each time, so no parse of it is ever served from the gate's caches."""
    return f"01{i % 100_000_000:08d}" if distinct else EXTENSION


def headers(account: str, uniqueid: str = "1700000000.1", extension: str = EXTENSION, *,
            plain: bool = False) -> bytes:
    """The header block Asterisk sends for ``AGI(agi://127.0.0.1/gate?account=...)``; ``plain``: without
    ``agi_version`` (the server then sends a ``SET VARIABLE`` per variable)."""
    return (f"agi_network: yes\nagi_request: agi://127.0.0.1/gate?account={account}\n"
            f"agi_network_script: gate?account={account}\nagi_channel: PJSIP/x-00000001\n"
            f"agi_uniqueid: {uniqueid}\nagi_callerid: {CALLER}\nagi_extension: {extension}\n"
            f"{'' if plain else AGI_VERSION}\n").encode()


class _Session(asyncio.Protocol):
    """One FastAGI session as Asterisk plays it: the headers, ``200 result=0`` to ``EXEC MSet``,
    ``200 result=1`` to ``SET VARIABLE``; done when the server closes."""

    __slots__ = ("allowed", "buffer", "done", "due", "head", "run", "started", "transport")

    def __init__(self, run: _Run, head: bytes, due: float, started: float) -> None:
        self.run = run
        self.head = head
        self.due = due
        self.started = started
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.allowed = False
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.head)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while (nl := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:nl], buffer[nl + 1:]
            if line.startswith(b"EXEC MSet "):
                self.allowed = self.allowed or ALLOWED_MSET in line
                self.transport.write(b"200 result=0\n")  # type: ignore[union-attr]
            elif line.startswith(b"SET VARIABLE "):
                self.allowed = self.allowed or line.startswith(ALLOWED_SET)
                self.transport.write(b"200 result=1\n")  # type: ignore[union-attr]
        self.buffer = buffer

    def eof_received(self) -> bool | None:
        self.finish(time.monotonic())
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(time.monotonic())

    def connected(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:  # refused, reset: a failed session
            self.finish(time.monotonic())

    def finish(self, at: float) -> None:
        if not self.done:
            self.done = True
            self.run.finished(self, at)


class _Run:
    """This process's share of the schedule, and what it saw."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, heads: list[bytes], dues: list[float]) -> None:
        self.loop = loop
        self.port = port
        self.heads = heads
        self.dues = dues
        self.next = 0
        self.open = 0
        self.latency_ms: list[float] = []  # due -> server's close
        self.lag_ms: list[float] = []  # due -> connect called (the client's own lateness)
        self.failed = 0
        self.all_done = loop.create_future()

    def tick(self) -> None:
        """Start every session that is due, then sleep until the next one is."""
        now = time.monotonic()
        dues = self.dues
        while self.next < len(dues) and dues[self.next] <= now:
            self.start(self.next, now)
            self.next += 1
            now = time.monotonic()
        if self.next < len(dues):
            self.loop.call_later(dues[self.next] - now, self.tick)

    def start(self, j: int, now: float) -> None:
        session = _Session(self, self.heads[j], self.dues[j], now)
        self.open += 1
        task = self.loop.create_task(self.loop.create_connection(lambda: session, HOST, self.port))
        task.add_done_callback(session.connected)

    def finished(self, session: _Session, at: float) -> None:
        self.lag_ms.append((session.started - session.due) * 1000)
        self.latency_ms.append((at - session.due) * 1000)
        if not session.allowed:
            self.failed += 1
        self.open -= 1
        if self.open == 0 and self.next == len(self.dues) and not self.all_done.done():
            self.all_done.set_result(None)


async def run(port: int, heads: list[bytes], dues: list[float], timeout_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    state = _Run(loop, port, heads, dues)
    cpu0, wall0 = time.process_time(), time.monotonic()
    if not dues:
        return {"requests": 0}
    loop.call_later(max(0.0, dues[0] - wall0), state.tick)
    try:
        await asyncio.wait_for(asyncio.shield(state.all_done), timeout_s)
    except TimeoutError:
        pass
    unfinished = len(dues) - len(state.latency_ms)
    return {"requests": len(dues), "failed": state.failed + unfinished, "unfinished": unfinished,
            "cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - wall0,
            "latency_ms": state.latency_ms, "lag_ms": state.lag_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--rate", type=float, required=True, help="sessions/s, all processes together")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--index", type=int, default=0, help="this process's index k: it takes i = k, k + K, ...")
    parser.add_argument("--of", type=int, default=1, help="K, the number of client processes")
    parser.add_argument("--first", type=int, default=0, help="uniqueid of session 0 (distinct per run)")
    parser.add_argument("--distinct", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--cpus", default="", help="pin to these CPUs (comma-separated)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    n = int(args.rate * args.seconds)
    mine = range(args.index, n, args.of)
    heads = [headers(args.account, f"1900000000.{args.first + i}", dialled(args.first + i, args.distinct),
                     plain=args.plain) for i in mine]
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    dues = [start + i / args.rate for i in mine]

    import uvloop  # a dependency of callctl (the daemon's loop)

    result = uvloop.run(run(args.port, heads, dues, args.seconds + 20.0))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
