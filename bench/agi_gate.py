"""The FastAGI gate round trip against spawning a classic AGI process per call, same gate, same
PostgreSQL (throwaway, fsync on).

    .venv/bin/python -m bench.agi_gate [--fast 500] [--classic 40]

This process plays Asterisk's side of both: for FastAGI it connects to callctl's AgiServer (its own
process, callctl's gate handler and pool) and sends the AGI headers; for classic AGI it spawns
``python -m bench.agi_gate classic`` per request, writes the headers on its stdin and answers its
``SET VARIABLE`` commands, as Asterisk's AGI() does for a script. Both answer an ordinary call
(allowed: no emergency check in the database). Prints requests/s, p50/p99 per request and CPU
per request of the serving side. Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.figures import pct
from scripts.devstack import REPO, free_port
from tests.integration.test_gating_agi import agi_session
from tests.support.postgres import MIGRATIONS, PostgresCluster, apply_migrations

EXTENSION, CALLER = "0123456789", "+33170000001"


def headers(account: str) -> bytes:
    return (f"agi_request: /usr/share/asterisk/agi-bin/gate\nagi_network_script: gate?account={account}\n"
            f"agi_channel: PJSIP/x-00000001\nagi_callerid: {CALLER}\nagi_extension: {EXTENSION}\n\n").encode()


# -- the serving sides -------------------------------------------------------------------------
def countries() -> Any:
    """The country table of the repo's dialplan (its flows need the conference step registered)."""
    import callctl.conference.steps  # noqa: F401
    from callctl.flows.loader import load_dialplan

    return load_dialplan(REPO / "dialplan").countries


async def _serve(url: str, port: int) -> None:
    from callctl.agi.gate import gate_handler
    from callctl.agi.server import AgiServer
    from callctl.store.db import connect_pool

    pool = await connect_pool(url)
    try:
        async with AgiServer("127.0.0.1", port, gate_handler(pool, countries())):
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    finally:
        await pool.close()


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


# -- Asterisk's side ---------------------------------------------------------------------------
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


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(fast_n: int, classic_n: int) -> dict[str, Any]:
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
        server = subprocess.Popen([sys.executable, "-m", "bench.agi_gate", "serve", "--database-url", url,
                                   "--port", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "CALLCTL_LOG_LEVEL": "error"})
        assert server.stdout is not None
        for line in server.stdout:  # structlog lines (agi_listening) come first
            if line.strip() == "ready":
                break
        for _ in range(20):  # warm the pool and the code paths
            agi_session(port, account, EXTENSION, CALLER)
        fast: list[float] = []
        cpu0, started = cpu_of(server.pid), time.perf_counter()
        for _ in range(fast_n):
            t0 = time.perf_counter()
            assert agi_session(port, account, EXTENSION, CALLER)["CALLCTL_GATE"] == "allow"
            fast.append((time.perf_counter() - t0) * 1000)
        fast_wall, fast_cpu = time.perf_counter() - started, cpu_of(server.pid) - cpu0
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
            server.wait(15)
        cluster.destroy()
    return {
        "fast": {"requests": fast_n, "per_s": fast_n / fast_wall, "p50_ms": pct(fast, 50), "p99_ms": pct(fast, 99),
                 "cpu_ms_per_request": fast_cpu * 1000 / fast_n},
        "classic": {"requests": classic_n, "per_s": classic_n / classic_wall, "p50_ms": pct(classic, 50),
                    "p99_ms": pct(classic, 99), "cpu_ms_per_request": classic_cpu * 1000 / classic_n},
    }


def report(r: dict[str, Any]) -> str:
    f, c = r["fast"], r["classic"]
    return (f"FastAGI gate (callctl's server):  {f['per_s']:8.1f} req/s, p50 {f['p50_ms']:.2f} ms, "
            f"p99 {f['p99_ms']:.2f} ms, {f['cpu_ms_per_request']:.2f} ms CPU/request (server)\n"
            f"classic AGI (a process per call): {c['per_s']:8.1f} req/s, p50 {c['p50_ms']:.1f} ms, "
            f"p99 {c['p99_ms']:.1f} ms, {c['cpu_ms_per_request']:.1f} ms CPU/request (spawned process)\n"
            f"classic / FastAGI: {c['p50_ms'] / f['p50_ms']:.0f}x the latency (p50), "
            f"{c['cpu_ms_per_request'] / max(f['cpu_ms_per_request'], 1e-9):.0f}x the CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    serve = sub.add_parser("serve")
    serve.add_argument("--database-url", required=True)
    serve.add_argument("--port", type=int, required=True)
    classic = sub.add_parser("classic")
    classic.add_argument("--database-url", required=True)
    parser.add_argument("--fast", type=int, default=500, help="FastAGI requests")
    parser.add_argument("--classic", type=int, default=40, help="classic AGI processes")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench")
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(_serve(args.database_url, args.port))
    elif args.mode == "classic":
        asyncio.run(_classic(args.database_url))
    else:
        result = measure(args.fast, args.classic)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agi.json").write_text(json.dumps(result, indent=1))
        print(report(result))


if __name__ == "__main__":
    main()
