"""What the per-call trace (issue 21) costs on the call path, single core (CPU time of this process):
the demo menu flow (answer, menu key 2, collect 4 digits + #, read back, goodbye) run on a fake call
with and without the trace, then the call's CDR encoded for the spool with and without it.

    .venv/bin/python -m bench.trace [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid

from callctl import logging as clog
from callctl.calls.lifecycle import Lifecycle
from callctl.calls.records import CallFacts, call_record
from callctl.calls.result import CallResult
from callctl.calls.trace import CallTrace
from callctl.cdr.copyline import encode
from callctl.flows.engine import run_flow
from callctl.flows.loader import load_dialplan
from callctl.flows.simulate import FakeCall, parse_dtmf
from scripts.devstack import REPO

MENU = "+33900000002"


async def flows(calls: int, traced: bool) -> tuple[float, list[CallTrace]]:
    plan = load_dialplan(REPO / "dialplan")
    route = plan.route(MENU)
    assert route is not None
    traces = []
    start = time.process_time()
    for _ in range(calls):
        record = CallTrace() if traced else None
        await run_flow(plan, route, FakeCall(called=MENU, groups=parse_dtmf("2 1234#")), record=record)
        if record is not None:
            traces.append(record)
    return time.process_time() - start, traces


def cdrs(traces: list[CallTrace], traced: bool) -> tuple[float, int]:
    now = dt.datetime.now(dt.UTC)
    size = 0
    start = time.process_time()
    for trace in traces:
        result = CallResult(flow="demo-menu", trace=trace if traced else CallTrace())
        facts = CallFacts(str(uuid.uuid4()), "chan", "+33612345678", MENU, "FR", "completed")
        size += len(encode(call_record(facts, Lifecycle(started_at=now), result, now)))
    return time.process_time() - start, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    clog.configure("info")  # as the daemon runs: the engine's debug lines are filtered out
    asyncio.run(flows(200, traced=True))  # warm-up: imports, dialplan parse caches
    # Alternated rounds, the fastest of each kept: a shared machine's load only ever adds time.
    plain_s = traced_s = cdr_plain_s = cdr_traced_s = float("inf")
    for _ in range(args.rounds):
        plain_s = min(plain_s, asyncio.run(flows(args.calls, traced=False))[0])
        t, traces = asyncio.run(flows(args.calls, traced=True))
        traced_s = min(traced_s, t)
        c, plain_bytes = cdrs(traces, traced=False)
        cdr_plain_s = min(cdr_plain_s, c)
        c, traced_bytes = cdrs(traces, traced=True)
        cdr_traced_s = min(cdr_traced_s, c)
    per = 1e6 / args.calls
    print(f"trace: demo menu flow (6 steps) x {args.calls}, fastest of {args.rounds} alternated rounds, one core")
    print(f"  flow run     without trace {plain_s * per:8.1f} us/call   with trace {traced_s * per:8.1f} us/call "
          f"(+{(traced_s - plain_s) * per:.1f} us)")
    print(f"  CDR encode   without trace {cdr_plain_s * per:8.1f} us/call   "
          f"with trace {cdr_traced_s * per:8.1f} us/call (+{(cdr_traced_s - cdr_plain_s) * per:.1f} us)")
    print(f"  CDR spool line {plain_bytes / args.calls:.0f} B -> {traced_bytes / args.calls:.0f} B "
          f"(+{(traced_bytes - plain_bytes) / args.calls:.0f} B a call)")


if __name__ == "__main__":
    main()
