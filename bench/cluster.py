"""`make bench-cluster`: SIPp through Kamailio onto 1 and 2 Asterisk nodes (one engine each), side by side.

    .venv/bin/python -m bench.cluster [--rates 10,20,30] [--step-s 10] [--out .state/bench-cluster]

Per front (Kamailio with 1 node, Kamailio with 2 nodes) and call rate: calls placed, failed, calls/s
sustained, Kamailio CPU per call; then the latency Kamailio adds (INVITE to 200 OK through Kamailio
against straight to a node, at a low rate) and PostgreSQL's work per call (pg_stat_statements:
statements, rows; WAL bytes). The welcome call (answer, a 1.3 s prompt, hang-up) is the unit of work.
Both fronts run on the same machine as the nodes: on 2 shared cores the 2-node figures show the
proxy's cost and the spreading, not a doubled capacity (docs/scaling.md reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg

from scripts.cluster import KamailioInstance, node_instance
from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from scripts.run import engine_env
from tests.support import sipp
from tests.support.asterisk import Daemon, render_prompts, wait_for
from tests.support.cluster import free_rtp_range
from tests.support.postgres import PostgresCluster, apply_migrations

WELCOME = "+33900000001"
SECTION = "## Cluster: SIPp through Kamailio (`make bench-cluster`, issue 18)"


def run_sipp(port: int, calls: int, rate: float, work: Path, *, trace: bool = False) -> dict[str, Any]:
    """``calls`` welcome calls at ``rate``/s to ``port``: successes, failures, INVITE -> 200 OK times (SIPp's
    own, in whole ms; with ``trace``, from its message log's microsecond stamps)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "scenario.xml").write_text(sipp.scenario([("wait_bye", None)], bye_timeout_s=20))
    started = time.monotonic()
    res = subprocess.run(
        ["sipp", f"127.0.0.1:{port}", "-sf", "scenario.xml", "-s", WELCOME, "-i", "127.0.0.1",
         "-p", str(free_port_pair()), "-m", str(calls), "-r", str(rate), "-l", str(max(calls, 1)), "-nostdin",
         "-timeout", f"{int(calls / rate) + 60}s", "-trace_stat", "-stf", "stat.csv", "-trace_rtt", "-rtt_freq", "1",
         "-trace_err", "-error_file", "errors.log",
         *(["-trace_msg", "-message_file", "messages.log"] if trace else [])],
        cwd=work, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - started
    stat = (work / "stat.csv").read_text().splitlines()
    head, last = stat[0].split(";"), stat[-1].split(";")
    row = dict(zip(head, last, strict=False))
    rtts: list[float] = []
    for rtt_file in work.glob("*_rtt.csv"):
        for line in rtt_file.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2 and parts[1].strip():
                rtts.append(float(parts[1]))
    if trace:
        rtts = invite_to_200_ms(sipp._parse_trace((work / "messages.log").read_text(errors="replace")))
    return {"ok": int(row["SuccessfulCall(C)"]), "failed": int(row["FailedCall(C)"]), "elapsed_s": elapsed,
            "rtt_ms": rtts, "returncode": res.returncode}


def invite_to_200_ms(messages: list[tuple[Any, str]]) -> list[float]:
    """Per Call-ID: the first INVITE sent to the first 200 OK received for it, in ms."""
    sent: dict[str, Any] = {}
    out: list[float] = []
    for at, text in messages:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        call_id = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("call-id:")), "")
        if len(lines) < 2 or not call_id:
            continue
        if lines[0].startswith("UDP message sent") and lines[1].startswith("INVITE"):
            sent.setdefault(call_id, at)
        elif (lines[0].startswith("UDP message received") and lines[1].startswith("SIP/2.0 200")
              and "INVITE" in text.split("CSeq:", 1)[-1].splitlines()[0] and call_id in sent):
            out.append((at - sent.pop(call_id)).total_seconds() * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def pg_counters(url: str) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        calls, rows = await conn.fetchrow(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
        wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return {"statements": float(calls), "rows": float(rows), "wal_bytes": float(wal)}
    finally:
        await conn.close()


async def top_statements(url: str, n: int = 8) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g') AS q FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY calls DESC LIMIT $1", n)
        return [(int(r["calls"]), str(r["q"])[:90]) for r in rows]
    finally:
        await conn.close()


def measure(rates: list[float], step_s: float, out: Path) -> dict[str, Any]:
    ensure_root()
    pg = PostgresCluster.throwaway_cluster()
    nodes: list[AsteriskInstance] = []
    engines: list[Daemon] = []
    fronts: dict[str, KamailioInstance] = {}
    try:
        pg.start()
        pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg.stop()
        pg.start()
        url = pg.new_database("callctl")
        apply_migrations(url)
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database="callctl")
        for n in (1, 2):
            start, end = free_rtp_range(400)
            node = node_instance(f"bench-cluster-{n}", n, http_port=free_port(), sip_port=free_port_pair(),
                                 rtp_start=start, rtp_end=end, trunk_port=free_port_pair())
            node.use_database(url)
            nodes.append(node)
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(node.start) for node in nodes] + [pool.submit(render_prompts, nodes[0])]
            for future in futures:
                future.result()
        for n, node in enumerate(nodes, start=1):
            state = out / f"node{n}"
            state.mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
            env.update({"CALLCTL_DATABASE_URL": url, "CALLCTL_NODE_ID": f"node{n}", "CALLCTL_LOG_LEVEL": "info",
                        "CALLCTL_AGI_LISTEN": f"127.0.0.1:{free_port()}",
                        **engine_env(node, state, http_port=free_port(), space_port=free_port())})
            engines.append(Daemon(env, state).start())
        for engine in engines:
            engine.wait_for_log("ari_connected", 30)
        for name, members in (("1 node", nodes[:1]), ("2 nodes", nodes)):
            kam = KamailioInstance(Path(tempfile.mkdtemp(prefix=f"kam-{len(members)}-", dir=out)),
                                   [f"127.0.0.1:{m.sip_port}" for m in members], listen_port=free_port_pair(),
                                   children=4)
            kam.start()
            fronts[name] = kam
        for kam in fronts.values():
            want = set(kam.nodes)
            wait_for(lambda k=kam, w=want: k.active_nodes() == w, 15, "nodes in rotation")  # type: ignore[misc]

        results: dict[str, Any] = {"rates": {}, "latency": {}, "pg": {}}
        # Latency at a low rate: straight to node 1, then through Kamailio (1 node), interleaved twice.
        direct: list[float] = []
        proxied: list[float] = []
        for rnd in range(2):
            direct += run_sipp(nodes[0].sip_port, 20, 5, out / f"lat-direct-{rnd}", trace=True)["rtt_ms"]
            proxied += run_sipp(fronts["1 node"].listen_port, 20, 5, out / f"lat-proxy-{rnd}", trace=True)["rtt_ms"]
        results["latency"] = {"direct_p50": pct(direct, 50), "direct_p95": pct(direct, 95),
                              "proxied_p50": pct(proxied, 50), "proxied_p95": pct(proxied, 95), "n": len(direct)}
        # Sustained rates, fronts interleaved at each rate; a front stops at its first step with a failure.
        stopped: set[str] = set()
        for rate in rates:
            for name, kam in fronts.items():
                if name in stopped:
                    continue
                calls = int(rate * step_s)
                before_cpu = kam.cpu_s()
                before_pg = asyncio.run(pg_counters(url))
                r = run_sipp(kam.listen_port, calls, rate, out / f"rate-{name.replace(' ', '')}-{rate:g}")
                after_pg = asyncio.run(pg_counters(url))
                cpu = kam.cpu_s() - before_cpu
                done = max(r["ok"], 1)
                results["rates"].setdefault(name, []).append({
                    "rate": rate, "calls": calls, "ok": r["ok"], "failed": r["failed"],
                    "sustained": r["ok"] / max(r["elapsed_s"] - 1.5, 1e-3),  # minus one call's length
                    "kamailio_cpu_ms_per_call": 1000 * cpu / done,
                    "invite_200_p50_ms": pct(r["rtt_ms"], 50),
                    "pg_statements_per_call": (after_pg["statements"] - before_pg["statements"]) / done,
                    "pg_wal_bytes_per_call": (after_pg["wal_bytes"] - before_pg["wal_bytes"]) / done,
                })
                print(name, results["rates"][name][-1], flush=True)
                if r["failed"]:
                    stopped.add(name)
        results["pg"]["top"] = asyncio.run(top_statements(url))
        results["spread"] = [len(e.events("call_finished")) for e in engines]
        return results
    finally:
        for kam in fronts.values():
            kam.stop()
        for engine in engines:
            engine.stop()
            engine.close_pipes()
        for node in nodes:
            node.stop()
        pg.destroy()


def report(r: dict[str, Any], rates: list[float], step_s: float) -> str:
    lat = r["latency"]
    lines = [
        SECTION, "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this 2-core machine (shared with other "
        f"sessions), both fronts and both nodes on the same cores; welcome calls (answer, a 1.3 s prompt, "
        f"hang-up), {step_s:g} s per step, rates {', '.join(f'{x:g}' for x in rates)} calls/s. "
        "All figures measured by `bench/cluster.py`.", "",
        "| front | rate (calls/s) | calls ok / failed | sustained calls/s | Kamailio CPU ms/call | "
        "INVITE->200 p50 ms | PG statements/call | PG WAL bytes/call |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, steps in r["rates"].items():
        for s in steps:
            lines.append(f"| {name} | {s['rate']:g} | {s['ok']} / {s['failed']} | {s['sustained']:.1f} | "
                         f"{s['kamailio_cpu_ms_per_call']:.2f} | {s['invite_200_p50_ms']:.1f} | "
                         f"{s['pg_statements_per_call']:.1f} | {s['pg_wal_bytes_per_call']:.0f} |")
    lines += [
        "", f"Latency Kamailio adds (INVITE -> 200 OK at 5 calls/s, {lat['n']} calls each way, interleaved): "
        f"straight to a node p50 {lat['direct_p50']:.1f} ms / p95 {lat['direct_p95']:.1f} ms, through Kamailio "
        f"p50 {lat['proxied_p50']:.1f} ms / p95 {lat['proxied_p95']:.1f} ms "
        f"(+{lat['proxied_p50'] - lat['direct_p50']:.1f} ms at the median; from SIPp's message log, microsecond "
        "stamps). The per-rate column above is SIPp's own response time, in whole milliseconds.",
        f"Calls finished per engine over the whole run (node 1, node 2): {r['spread']}.",
        "", "Most frequent PostgreSQL statements over the run (pg_stat_statements, calls):", "",
    ]
    lines += [f"- {calls}: `{q}`" for calls, q in r["pg"]["top"]]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    """Replace this benchmark's own section (from its heading to the next '## '), or append it."""
    doc = path.read_text()
    if SECTION in doc:
        start = doc.index(SECTION)
        nxt = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + (doc[nxt + 1:] if nxt != -1 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10,20,30")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench-cluster")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not rates or any(r <= 0 for r in rates):
        parser.error(f"--rates {args.rates!r}: positive numbers, comma-separated")
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(rates, args.step_s, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(results, rates, args.step_s)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
