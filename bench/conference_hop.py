"""What a conference member handed to another node costs (issue 18, docs/conferences.md "Several
nodes"): two real nodes on one PostgreSQL, the room held by node B; ``--members`` participants join it
calling node B itself (local), then as many calling node A (handed to B over the inter-node trunk).

    .venv/bin/python -m bench.conference_hop [--members 8] [--hold-s 10] [--rounds 2]

Per member and phase: CPU seconds of each node's Asterisk and engine over the phase (callers keyed in,
held ``--hold-s`` in the room, hung up), and the hop's added join latency (node A's
``conference_member_hop`` to node B's ``conference_member_join``, both engines' clocks on one host).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.conference_load import cpu_s
from callctl.store import conferences as store
from callctl.store.db import connect_pool
from callctl.store.migrate import migrate
from tests.support import sipp
from tests.support.affinity_nodes import Node, launch_engine, running_nodes
from tests.support.asterisk import Daemon
from tests.support.postgres import MIGRATIONS, PostgresCluster

ACCESS = "+33900000100"


async def book(url: str, members: int) -> tuple[str, str, list[str]]:
    pool = await connect_pool(url)
    try:
        now = dt.datetime.now(dt.UTC)
        conf, codes, _ = await store.save_booking(
            pool, subject="hop bench", starts_at=now, ends_at=now + dt.timedelta(hours=2),
            organizer="org@example.com", participants=[f"p{i}@example.com" for i in range(members)],
            access_numbers=[ACCESS], max_members=members + 1)
    finally:
        await pool.close()
    organizer = next(c.code for c in codes if c.role == "organizer")
    return str(conf.id), organizer, [c.code for c in codes if c.role == "participant"]


def ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def phase(node: Node, codes: list[str], hold_s: float, watched: dict[str, int]) -> dict[str, float]:
    """Callers on ``node`` keying ``codes`` one after the other (0.5 s apart), held, hung up: the CPU
    seconds each watched process spent meanwhile."""
    before = {name: cpu_s(pid) for name, pid in watched.items()}
    calls = []
    for i, code in enumerate(codes):
        calls.append(sipp.start_call(node.asterisk.sip_port, ACCESS,
                                     [("pause", 1200), ("dtmf", code + "#"), ("pause", int(hold_s * 1000)),
                                      ("bye", None)], caller=f"3361200{i:04d}", bye_timeout_s=60,
                                     remote_ip=node.sip_ip))
        time.sleep(0.5)  # a steady arrival rate (load generation, not synchronisation)
    failed = sum(not sipp.finish(proc, work).ok for proc, work in calls)
    spent = {name: cpu_s(pid) - before[name] for name, pid in watched.items()}
    spent["failed"] = failed
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--hold-s", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cluster = PostgresCluster.throwaway_cluster()
    cluster.start()
    engines: dict[str, Daemon] = {}
    try:
        url = cluster.new_database("bench")
        asyncio.run(migrate(url, MIGRATIONS))
        work = Path(tempfile.mkdtemp(prefix="callctl-hop-"))
        with running_nodes() as nodes:
            for node_id, node in nodes.items():
                engines[node_id] = launch_engine(node.asterisk, node_id, url, work / node_id)
            for d in engines.values():
                d.wait_until_ready()
            watched = {"asterisk_a": nodes["a"].asterisk.proc.pid, "asterisk_b": nodes["b"].asterisk.proc.pid,  # type: ignore[union-attr]
                       "engine_a": engines["a"].proc.pid, "engine_b": engines["b"].proc.pid}  # type: ignore[union-attr]
            results: dict[str, list[dict[str, float]]] = {"local": [], "hop": []}
            latencies: list[float] = []
            for _ in range(args.rounds):
                conf_id, organizer, codes = asyncio.run(book(url, 2 * args.members))
                total_s = 1.2 + 0.4 * 10 + args.hold_s + 0.5 * args.members + 60
                org = sipp.start_call(nodes["b"].asterisk.sip_port, ACCESS,
                                      [("pause", 1200), ("dtmf", organizer + "#"),
                                       ("pause", int(3 * total_s * 1000)), ("bye", None)],
                                      caller="33611999999", bye_timeout_s=60, remote_ip=nodes["b"].sip_ip)
                engines["b"].wait_for_log("conference_member_join", 20, conference_id=conf_id, role="organizer")
                results["local"].append(phase(nodes["b"], codes[:args.members], args.hold_s, watched))
                seen_b = len(engines["b"].events("conference_member_join", conference_id=conf_id))
                results["hop"].append(phase(nodes["a"], codes[args.members:], args.hold_s, watched))
                hops = engines["a"].events("conference_member_hop", conference_id=conf_id)
                joins = engines["b"].events("conference_member_join", conference_id=conf_id)[seen_b:]
                latencies += [(ts(j) - ts(h)) * 1000 for h, j in zip(hops, joins, strict=False)]
                org[0].kill()
                org[0].wait()
        print(f"members per phase: {args.members}, hold {args.hold_s:g} s, rounds {args.rounds}")
        for name, runs in results.items():
            best = {k: min(r[k] for r in runs) for k in runs[0]}  # a shared machine's load only adds
            per = {k: v / args.members * 1000 for k, v in best.items() if k != "failed"}
            print(f"{name:5}: failed {int(sum(r['failed'] for r in runs))}; CPU ms per member: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
        if latencies:
            print(f"hop join latency (A hop -> B join), ms: p50 {statistics.median(latencies):.0f}, "
                  f"max {max(latencies):.0f} over {len(latencies)} members")
    finally:
        for d in engines.values():
            d.stop()
            d.close_pipes()
        cluster.destroy()


if __name__ == "__main__":
    main()
