"""The FastAGI gate: its capacity on one core and its latency at 2,000 requests/s (issue 17), against
spawning a classic AGI process per call; same gate, same PostgreSQL (throwaway, fsync on).

    .venv/bin/python -m bench.agi_gate [--fast 4000] [--concurrency 16] [--rate 2000] [--rate-s 5]
                                       [--classic 40] [--profile FILE] [--uvloop] [--distinct] [--plain]
                                       [--clients 2] [--py-spy FILE]

This process plays Asterisk's side: for FastAGI it opens concurrent sessions to callctl's AgiServer
(its own process, pinned to one CPU, wired as app.py wires it: the gate handler, its pool, the fraud
screen and the CDR writer with its spool), sends ``agi_version`` as Asterisk does and answers the
server's ``EXEC MSet`` with ``200 result=0`` (``--plain``: no ``agi_version``, so the server sends a
``SET VARIABLE`` per variable, each answered ``200 result=1``);
for classic AGI it spawns ``python -m bench.agi_gate classic`` per request, as Asterisk's AGI() does
for a script. Every request is an ordinary outbound call of an account with no dialer profile
(allowed, CDR written). Phases:

- closed loop: ``--fast`` sessions, ``--concurrency`` at a time: requests/s achieved, CPU per request
  of the server process, so the capacity of its one core (1000 / CPU ms per request);
- open loop: sessions started at ``--rate``/s for ``--rate-s`` seconds whatever the answers, by
  ``--clients`` processes of ``bench.agi_load`` (uvloop, one Protocol per session, request bytes built
  beforehand) pinned to the other CPU(s), on one schedule that does not drift; latency counted from
  each session's scheduled start to the server's close (a late start is latency): p50/p95/p99/max at
  that rate, printed beside the server's and the clients' CPU per request and share of their CPU, the
  clients' start lag, and how busy each CPU was (every process), so a reader sees whose queue it is.

Prints the goals with PASS/FAIL: capacity >= 2,000 requests/s on one core, p99 <= 5 ms at 2,000/s.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import agi_load
from bench.agi_load import CALLER, dialled
from bench.figures import pct
from scripts.devstack import REPO, free_port
from tests.support.postgres import MIGRATIONS, PostgresCluster, apply_migrations

GOAL_PER_S, GOAL_P99_MS = 2000.0, 5.0
# Real Asterisk names its version in the headers, and the server then sets the variables in one
# ``EXEC MSet``; ``--plain`` leaves it out (the server's eight ``SET VARIABLE`` round trips, as before).
PLAIN = False


def headers(account: str, uniqueid: str = "1700000000.1", extension: str = agi_load.EXTENSION) -> bytes:
    return agi_load.headers(account, uniqueid, extension, plain=PLAIN)


# -- the serving sides -------------------------------------------------------------------------
def countries() -> Any:
    """The country table of the repo's dialplan (its flows need the conference step registered)."""
    import callctl.conference.steps  # noqa: F401
    from callctl.flows.loader import load_dialplan

    return load_dialplan(REPO / "dialplan").countries


async def _serve(url: str, port: int, profile: Path | None, cdr: bool = True) -> None:
    """The gate as app.py wires it: pool, fraud screen, CDR writer (spool in a temporary directory);
    ``cdr=False``: no CDR handed over (to see the writer's share of the server's CPU)."""
    from callctl.agi.gate import gate_handler
    from callctl.agi.server import AgiServer
    from callctl.cdr.writer import CdrWriter
    from callctl.fraud.service import FraudService
    from callctl.store import cdrs
    from callctl.store.facts import AccountFactsCache
    from callctl.store.pool import lazy_pool

    os.sched_setaffinity(0, {0})  # one core
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    try:
        with tempfile.TemporaryDirectory(prefix="agi-bench-spool-") as spool:
            async with lazy_pool(url) as pool, AccountFactsCache(url) as facts, \
                    CdrWriter(url, Path(spool), store_factory=cdrs.PgCdrStore) as writer, \
                    AgiServer("127.0.0.1", port, gate_handler(pool, countries(), submit=writer.submit if cdr else None,
                                                              fraud=FraudService(pool), facts=facts)):
                await facts.wait_for_listening(10)
                print("ready", flush=True)
                loop = asyncio.get_running_loop()
                reader = asyncio.StreamReader()
                await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
                while line := await reader.readline():  # "profile on/off" from the parent, EOF: stop
                    if profiler is not None and line.strip() == b"profile on":
                        profiler.enable()
                    elif profiler is not None and line.strip() == b"profile off":
                        profiler.disable()
                    print("ok", flush=True)
                await writer.wait_for_drained(30)
    finally:
        if profiler is not None and profile is not None:
            profiler.dump_stats(str(profile))


async def _classic(url: str) -> None:
    """One classic AGI request: headers on stdin, commands on stdout, replies on stdin."""
    from callctl.agi.gate import gate_handler
    from callctl.agi.server import _quote, parse_request
    from callctl.store.db import connect

    head: dict[str, str] = {}
    for line in sys.stdin:
        if not line.strip():
            break
        key, _, value = line.partition(":")
        head[key.strip()] = value.strip()
    table = countries()
    conn = await connect(url)
    try:
        variables = await gate_handler(conn, table)(parse_request(head, "local"))
    finally:
        await conn.close()
    for name, value in variables.items():
        sys.stdout.write(f"SET VARIABLE {name} {_quote(value)}\n")
        sys.stdout.flush()
        sys.stdin.readline()


def _allowing_gate() -> tuple[Any, str]:
    """The real gate handler with an account's facts as the cache serves them and the fraud screen's policy
    (an allowed outbound call needs no database), CDRs kept in a list; and that account's id."""
    import uuid

    from callctl.agi.gate import gate_handler
    from callctl.fraud.rules import FraudPolicy, Permissions
    from callctl.store.facts import GateFacts

    known = GateFacts(country="FR", automated=False, permissions=Permissions(), suspended=False)

    class Facts:
        async def gate_facts(self, db: Any, account_id: uuid.UUID) -> GateFacts | None:
            return known

    class Fraud:
        policy = FraudPolicy()

        async def refuse_agi(self, account_id: uuid.UUID, country: str, number: str) -> None:
            raise AssertionError("an allowed call never reaches the fraud screen's reads")

    records: list[Any] = []
    return gate_handler(None, countries(), submit=records.append, fraud=Fraud(), facts=Facts()), str(uuid.uuid4())


def handler_cost(n: int, distinct: bool) -> float:
    """The gate handler alone, in this process: CPU µs per decision of an allowed outbound call
    (facts as the cache serves them, the fraud screen's policy, the CDR built and handed over; no
    socket, no database: such a call needs none). The decision's own Python, without the AGI I/O."""

    from callctl.agi.server import parse_request

    handle, account = _allowing_gate()
    requests = [parse_request({"agi_network_script": f"gate?account={account}", "agi_channel": "PJSIP/x-1",
                               "agi_uniqueid": f"1700000000.{i}", "agi_callerid": CALLER,
                               "agi_extension": dialled(i, distinct)}, "127.0.0.1") for i in range(n)]

    async def run() -> float:
        await handle(requests[0])  # warm
        t0 = time.process_time()
        for request in requests:
            got = await handle(request)
            assert got["CALLCTL_GATE"] == "allow", got
        return time.process_time() - t0

    return asyncio.run(run()) * 1e6 / n


def session_cost(n: int, distinct: bool, loop_name: str) -> dict[str, float]:
    """The server's Python per FastAGI session, without sockets: a ``_Session`` of callctl's AgiServer on
    a fake transport, fed the headers and the ``200 result=0`` reply as uvloop would hand them over, the
    real gate handler behind it (as in ``handler``). CPU µs per session (this process), and the same for
    the gate handler alone, so the session's own part is the difference."""

    from callctl.agi import server as agi
    handle, account = _allowing_gate()
    heads = [headers(account, f"1700000000.{i}", dialled(i, distinct)) for i in range(n)]
    written: list[bytes] = []

    class Transport:
        """What the session uses of uvloop's TCPTransport."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop
            self.protocol: Any = None
            self.closing = False
            self.wrote = loop.create_future()
            self.lost = loop.create_future()

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 40000) if name == "peername" else default

        def write(self, data: bytes) -> None:
            written.append(data)
            if not self.wrote.done():
                self.wrote.set_result(None)

        def close(self) -> None:
            if not self.closing:
                self.closing = True
                self.loop.call_soon(self.lose)

        def lose(self) -> None:
            self.protocol.connection_lost(None)
            self.lost.set_result(None)

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        server = agi.AgiServer("127.0.0.1", 0, handle)
        if hasattr(server, "_loop"):
            server._loop = loop

        async def one(head: bytes) -> None:
            session = agi._Session(server)
            transport = Transport(loop)
            transport.protocol = session
            session.connection_made(transport)  # type: ignore[arg-type]
            session.data_received(head)
            while not transport.closing:  # a command (the handler's task sent it), its reply
                await transport.wrote
                transport.wrote = loop.create_future()
                reply = b"200 result=0\n" if written[-1].startswith(b"EXEC ") else b"200 result=1\n"
                written.clear()
                session.data_received(reply)
                await asyncio.sleep(0)  # the old server's task takes the reply in its next turn
            await transport.lost

        for head in heads[:200]:  # warm
            await one(head)
        t0 = time.process_time()
        for head in heads:
            await one(head)
        session_s = time.process_time() - t0
        requests = [agi.parse_request({"agi_network_script": f"gate?account={account}", "agi_channel": "PJSIP/x-1",
                                       "agi_uniqueid": f"1700000000.{i}", "agi_callerid": CALLER,
                                       "agi_extension": dialled(i, distinct)}, "127.0.0.1") for i in range(n)]
        t0 = time.process_time()
        for request in requests:
            await handle(request)
        return session_s, time.process_time() - t0

    if loop_name == "uvloop":
        import uvloop

        session_s, handler_s = uvloop.run(run())
    else:
        session_s, handler_s = asyncio.run(run())
    return {"session_us": session_s * 1e6 / n, "handler_us": handler_s * 1e6 / n}


# -- Asterisk's side ---------------------------------------------------------------------------
async def fast_session(port: int, head: bytes) -> dict[str, str]:
    """One FastAGI session as Asterisk plays it: the headers, then '200 result=1' to each command."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    variables: dict[str, str] = {}
    try:
        writer.write(head)
        while line := await reader.readline():
            text = line.decode()
            if text.startswith("SET VARIABLE "):
                name, _, value = text[len("SET VARIABLE "):].strip().partition(" ")
                variables[name] = value.strip('"')
                writer.write(b"200 result=1\n")
            elif text.startswith("EXEC MSet "):
                variables.update(mset_variables(text))
                writer.write(b"200 result=0\n")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return variables


def mset_variables(line: str) -> dict[str, str]:
    """What Asterisk's ``EXEC MSet "a=1,b=2"`` sets (a model of res_agi's parse_args and MSet's split:
    backslash escapes, double quotes removed; the bench's own values have no () or [])."""
    def unescape(text: str, delim: str) -> list[str]:
        parts, cur, quoted, escaped = [], "", False, False
        for ch in text:
            if escaped:
                cur, escaped = cur + ch, False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == delim and not quoted:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        return [*parts, cur]

    data = unescape(line.rstrip("\n")[len("EXEC MSet "):], "\n")[0]
    return dict(pair.split("=", 1) for pair in unescape(data, ","))


async def closed_loop(port: int, account: str, n: int, concurrency: int, distinct: bool = False,
                      first: int = 0) -> list[float]:
    latencies: list[float] = []
    todo = iter(range(first, first + n))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            got = await fast_session(port, headers(account, f"1700000000.{i}", dialled(i, distinct)))
            assert got["CALLCTL_GATE"] == "allow", got
            latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values[:8]]
            ticks[int(name[3:])] = (sum(numbers) - numbers[3] - numbers[4], sum(numbers))
    return ticks


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Per CPU: the share of the interval it was busy (any process)."""
    return {cpu: (after[cpu][0] - before[cpu][0]) / max(after[cpu][1] - before[cpu][1], 1) for cpu in after}


def open_loop(port: int, account: str, rate: float, seconds: float, server_pid: int, *, clients: int,
              client_cpus: set[int], distinct: bool = False) -> dict[str, Any]:
    """``clients`` processes of bench.agi_load, pinned to ``client_cpus``, start sessions on one fixed
    schedule (``rate``/s for ``seconds``); the server's and the clients' CPU over the same interval."""
    cmd = [sys.executable, "-m", "bench.agi_load", "--port", str(port), "--account", account, "--rate", str(rate),
           "--seconds", str(seconds), "--of", str(clients), "--first", "1000000",
           "--cpus", ",".join(str(c) for c in sorted(client_cpus))]
    cmd += ["--distinct"] if distinct else []
    cmd += ["--plain"] if PLAIN else []
    procs = [subprocess.Popen([*cmd, "--index", str(k)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}) for k in range(clients)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a load client did not start")
        ticks0, server0 = cpu_ticks(), cpu_of(server_pid)
        start = time.monotonic() + 0.2
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start!r}\n")
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
        wall = time.monotonic() - start
        ticks1, server1 = cpu_ticks(), cpu_of(server_pid)
    finally:
        for proc in procs:  # an early failure: no start time comes, each client ends by itself
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    latency = [v for r in results for v in r["latency_ms"]]
    lag = [v for r in results for v in r["lag_ms"]]
    n = sum(r["requests"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    busy = busy_share(ticks0, ticks1)
    return {
        "rate": rate, "seconds": seconds, "requests": n, "failed": sum(r["failed"] for r in results),
        "unfinished": sum(r["unfinished"] for r in results), "wall_s": wall,
        "p50_ms": pct(latency, 50), "p95_ms": pct(latency, 95), "p99_ms": pct(latency, 99),
        "max_ms": max(latency, default=None),
        "cpu_ms_per_request": (server1 - server0) * 1000 / max(n, 1),
        "server_share": (server1 - server0) / wall,
        "clients": clients, "client_cpus": sorted(client_cpus),
        "client_cpu_ms_per_request": client_cpu * 1000 / max(n, 1),
        "client_share": client_cpu / wall / max(len(client_cpus), 1),
        "lag_p50_ms": pct(lag, 50), "lag_p99_ms": pct(lag, 99), "lag_max_ms": max(lag, default=None),
        "cpu_busy": {str(cpu): share for cpu, share in busy.items()},
    }


def classic_request(url: str, account: str) -> dict[str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.agi_gate", "classic", "--database-url", url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(headers(account).decode())
    proc.stdin.flush()
    variables: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("SET VARIABLE "):
            name, _, value = line[len("SET VARIABLE "):].strip().partition(" ")
            variables[name] = value.strip('"')
            proc.stdin.write("200 result=1\n")
            proc.stdin.flush()
    proc.stdin.close()
    proc.wait(30)
    return variables


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (collapsed stacks, ``--format raw``; bench/profile_top.py reads them)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--nonblocking",
                             "--format", "raw", "--rate", "200", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _strace(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """strace counting the system calls of ``pid`` and its threads (``-c -f``: a summary table)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(sampler: subprocess.Popen[bytes]) -> None:
    sampler.send_signal(signal.SIGINT)
    try:
        sampler.wait(30)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.wait(10)


def threads_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid``'s main thread (the event loop) and of its other threads (the CDR spool's
    worker, asyncpg's none); threads that ended are not counted."""
    main = others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if task.name == str(pid):
                main += cpu
            else:
                others += cpu
    return main, others


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tell(server: subprocess.Popen[str], line: str) -> None:
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(line + "\n")
    server.stdin.flush()
    while server.stdout.readline().strip() != "ok":
        pass


def measure(fast_n: int, concurrency: int, rate: float, rate_s: float, classic_n: int,
            profile: Path | None = None, uvloop: bool = False, distinct: bool = False, clients: int = 2,
            spy: Path | None = None, strace: Path | None = None, cdr: bool = True,
            server_tree: Path = REPO) -> dict[str, Any]:
    cluster = PostgresCluster.throwaway_cluster()
    cluster.start()
    server: subprocess.Popen[str] | None = None
    try:
        url = cluster.new_database("agi")
        apply_migrations(url, MIGRATIONS)
        made = subprocess.run([sys.executable, "-m", "callctl", "account", "create", "--name", "Bench",
                               "--country", "FR"], capture_output=True, text=True, check=True, cwd=REPO,
                              env={**os.environ, "CALLCTL_DATABASE_URL": url, "PYTHONPATH": str(REPO)})
        account = json.loads(made.stdout)["id"]
        port = free_port()
        cmd = [sys.executable, "-m", "bench.agi_gate", "serve", "--database-url", url, "--port", str(port)]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        if uvloop:
            cmd.append("--uvloop")
        if not cdr:
            cmd.append("--no-cdr")
        # --server-tree: another checkout's callctl serves (a before/after pair run by the same bench).
        server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=server_tree,
                                  env={**os.environ, "PYTHONPATH": str(server_tree), "CALLCTL_LOG_LEVEL": "error"})
        assert server.stdout is not None
        for line in server.stdout:  # structlog lines (agi_listening) come first
            if line.strip() == "ready":
                break
        client_cpus = set(range(os.cpu_count() or 1)) - {0} or {0}  # the clients elsewhere
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, client_cpus)
        asyncio.run(closed_loop(port, account, 200, concurrency))  # warm the pool and the code paths
        if profile is not None:
            _tell(server, "profile on")
        sampler = _py_spy(server.pid, spy) if spy is not None else None
        if strace is not None:
            sampler = _strace(server.pid, strace)
            time.sleep(1.0)  # attached to every thread before the first request
        cpu0, threads0, started = cpu_of(server.pid), threads_cpu(server.pid), time.perf_counter()
        fast = asyncio.run(closed_loop(port, account, fast_n, concurrency, distinct, first=10_000))
        fast_wall, fast_cpu = time.perf_counter() - started, cpu_of(server.pid) - cpu0
        threads1 = threads_cpu(server.pid)
        if sampler is not None:
            _stop(sampler)
        if profile is not None:
            _tell(server, "profile off")
        paced = (open_loop(port, account, rate, rate_s, server.pid, clients=clients, client_cpus=client_cpus,
                           distinct=distinct) if rate_s > 0 else None)
        classic: list[float] = []
        cpu0, started = children_cpu_s(), time.perf_counter()
        for _ in range(classic_n):
            t0 = time.perf_counter()
            assert classic_request(url, account)["CALLCTL_GATE"] == "allow"
            classic.append((time.perf_counter() - t0) * 1000)
        classic_wall, classic_cpu = time.perf_counter() - started, children_cpu_s() - cpu0
    finally:
        if server is not None and server.stdin is not None:
            server.stdin.close()
            server.wait(60)
        cluster.destroy()
    fast_cpu_ms = fast_cpu * 1000 / max(fast_n, 1)
    return {
        "load_avg": os.getloadavg(), "cpus": os.cpu_count(), "loop": "uvloop" if uvloop else "asyncio",
        "cdr": cdr, "server_tree": str(server_tree),
        "dialled": "distinct" if distinct else "same",
        "fast": {"requests": fast_n, "concurrency": concurrency, "per_s": fast_n / fast_wall,
                 "p50_ms": pct(fast, 50), "p99_ms": pct(fast, 99), "cpu_ms_per_request": fast_cpu_ms,
                 "loop_thread_cpu_ms_per_request": (threads1[0] - threads0[0]) * 1000 / max(fast_n, 1),
                 "other_threads_cpu_ms_per_request": (threads1[1] - threads0[1]) * 1000 / max(fast_n, 1),
                 "capacity_per_s_one_core": 1000 / max(fast_cpu_ms, 1e-9)},
        "paced": paced,
        "classic": {"requests": classic_n, "per_s": classic_n / classic_wall if classic_n else None,
                    "p50_ms": pct(classic, 50), "p99_ms": pct(classic, 99),
                    "cpu_ms_per_request": classic_cpu * 1000 / classic_n if classic_n else None},
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: dict[str, Any]) -> str:
    f, p, c = r["fast"], r["paced"], r["classic"]
    cap = f["capacity_per_s_one_core"]
    lines = [
        f"machine: {r['cpus']} CPUs, load average {r['load_avg'][0]:.2f} at the end; server pinned to CPU 0, "
        f"event loop {r['loop']}, dialled numbers {r.get('dialled', 'same')}, variables by "
        f"{r.get('variables_by', '?')}{'' if r.get('cdr', True) else ', no CDR handed over'}; server tree "
        f"{r.get('server_tree', '.')}",
        f"FastAGI gate, closed loop ({f['concurrency']} at a time): {f['per_s']:8.1f} req/s achieved, "
        f"p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms, {f['cpu_ms_per_request']:.3f} ms CPU/request "
        f"(server) = {cap:,.0f} req/s on one core (event loop thread {f['loop_thread_cpu_ms_per_request']:.3f} ms, "
        f"other threads {f['other_threads_cpu_ms_per_request']:.3f} ms)",
    ]
    if p is not None:
        busy = ", ".join(f"CPU {cpu} {share:.0%}" for cpu, share in sorted(p["cpu_busy"].items()))
        lines += [
            f"FastAGI gate, open loop at {p['rate']:g}/s for {p['seconds']:g} s: {p['requests']} requests, "
            f"{p['failed']} failed ({p['unfinished']} unfinished); from the scheduled start to the server's close: "
            f"p50 {p['p50_ms']:.2f} ms, p95 {p['p95_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms, max {p['max_ms']:.2f} ms",
            f"  server: {p['cpu_ms_per_request']:.3f} ms CPU/request = {p['server_share']:.0%} of CPU 0; "
            f"client ({p['clients']} processes on CPU {','.join(map(str, p['client_cpus']))}): "
            f"{p['client_cpu_ms_per_request']:.3f} ms CPU/request = {p['client_share']:.0%} of its CPU, start lag "
            f"p50 {p['lag_p50_ms']:.2f} ms, p99 {p['lag_p99_ms']:.2f} ms, max {p['lag_max_ms']:.2f} ms; "
            f"busy (every process): {busy}",
        ]
    if c["requests"]:
        lines.append(f"classic AGI (a process per call): {c['per_s']:8.1f} req/s, p50 {c['p50_ms']:.1f} ms, "
                     f"p99 {c['p99_ms']:.1f} ms, {c['cpu_ms_per_request']:.1f} ms CPU/request (spawned process)")
    lines.append(f"GOAL FastAGI capacity >= {GOAL_PER_S:,.0f} req/s on one core: {cap:,.0f}  "
                 f"{_verdict(cap >= GOAL_PER_S)} ({GOAL_PER_S:,.0f}/s would take "
                 f"{GOAL_PER_S * f['cpu_ms_per_request'] / 1000:.0%} of one core; a flat tail wants <= 70 %)")
    if p is not None:
        ok = p["p99_ms"] is not None and p["p99_ms"] <= GOAL_P99_MS and not p["failed"] and p["rate"] >= GOAL_PER_S
        lines.append(f"GOAL FastAGI p99 <= {GOAL_P99_MS:g} ms at {p['rate']:g}/s: {p['p99_ms']:.2f} ms  "
                     f"{_verdict(ok)} (client start lag p99 {p['lag_p99_ms']:.2f} ms, client "
                     f"{p['client_share']:.0%} of its CPU, server {p['server_share']:.0%} of CPU 0)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    serve = sub.add_parser("serve")
    serve.add_argument("--database-url", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--profile", type=Path)
    serve.add_argument("--uvloop", action="store_true")
    serve.add_argument("--no-cdr", action="store_true")
    handler = sub.add_parser("handler", help="the gate handler alone: CPU µs per decision")
    handler.add_argument("-n", type=int, default=20_000)
    handler.add_argument("--distinct", action="store_true")
    session = sub.add_parser("session", help="the server's Python per session, no socket: CPU µs")
    session.add_argument("-n", type=int, default=20_000)
    session.add_argument("--distinct", action="store_true")
    session.add_argument("--asyncio", action="store_true", help="asyncio's loop (default: uvloop)")
    classic = sub.add_parser("classic")
    classic.add_argument("--database-url", required=True)
    parser.add_argument("--fast", type=int, default=4000, help="FastAGI requests, closed loop")
    parser.add_argument("--concurrency", type=int, default=16, help="FastAGI sessions at a time, closed loop")
    parser.add_argument("--rate", type=float, default=GOAL_PER_S, help="FastAGI requests/s, open loop")
    parser.add_argument("--rate-s", type=float, default=5.0, help="seconds of the open loop")
    parser.add_argument("--classic", type=int, default=40, help="classic AGI processes")
    parser.add_argument("--profile", type=Path, help="cProfile the server during the closed loop into FILE")
    parser.add_argument("--uvloop", action="store_true", default=True,
                        help="the server on uvloop's event loop, as the daemon runs (the default)")
    parser.add_argument("--asyncio", dest="uvloop", action="store_false", help="the server on asyncio's own loop")
    parser.add_argument("--distinct", action="store_true",
                        help="each request dials a different number (no parse served from a cache)")
    parser.add_argument("--plain", action="store_true",
                        help="no agi_version header: the server answers with a SET VARIABLE per variable")
    parser.add_argument("--clients", type=int, default=2, help="load client processes of the open loop")
    parser.add_argument("--py-spy", type=Path, dest="spy",
                        help="py-spy the server during the closed loop into FILE (collapsed stacks)")
    parser.add_argument("--strace", type=Path, help="count the server's system calls during the closed loop into FILE")
    parser.add_argument("--no-cdr", action="store_true", help="the gate hands no CDR to the writer (its share)")
    parser.add_argument("--server-tree", type=Path, default=REPO,
                        help="the checkout whose callctl serves (default: this one): before/after pairs")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench")
    args = parser.parse_args()
    if args.plain:
        global PLAIN
        PLAIN = True
    if args.mode == "serve":
        if args.uvloop:
            import uvloop  # the bench extra's; the daemon's loop is chosen by callctl itself

            uvloop.run(_serve(args.database_url, args.port, args.profile, not args.no_cdr))
        else:
            asyncio.run(_serve(args.database_url, args.port, args.profile, not args.no_cdr))
    elif args.mode == "handler":
        print(f"gate handler alone, dialled numbers {'distinct' if args.distinct else 'same'}: "
              f"{handler_cost(args.n, args.distinct):.1f} µs CPU per decision, load average "
              f"{os.getloadavg()[0]:.2f}")
    elif args.mode == "session":
        cost = session_cost(args.n, args.distinct, "asyncio" if args.asyncio else "uvloop")
        print(f"FastAGI session without sockets ({'asyncio' if args.asyncio else 'uvloop'}, dialled numbers "
              f"{'distinct' if args.distinct else 'same'}): {cost['session_us']:.1f} µs CPU per session, of which "
              f"the gate handler {cost['handler_us']:.1f} µs; load average {os.getloadavg()[0]:.2f}")
    elif args.mode == "classic":
        asyncio.run(_classic(args.database_url))
    else:
        result = measure(args.fast, args.concurrency, args.rate, args.rate_s, args.classic, args.profile, args.uvloop,
                         args.distinct, args.clients, args.spy, args.strace, not args.no_cdr,
                         args.server_tree.resolve())
        args.out.mkdir(parents=True, exist_ok=True)
        result["variables_by"] = "a SET VARIABLE each" if PLAIN else "one EXEC MSet"
        (args.out / "agi.json").write_text(json.dumps(result, indent=1))
        print(report(result))


if __name__ == "__main__":
    main()
