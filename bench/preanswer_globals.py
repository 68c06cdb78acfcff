"""How Asterisk holds the pre-answered numbers (wt-preanswer): 10,000 numbers published as one global each
against at most 100 globals by last two digits (callctl.flows.preanswer), on a throwaway Asterisk.

Prints, for each layout: the time to publish every number over ARI (the engine does it at every connect),
and inside Asterisk (a dialplan loop on a Local channel, so no HTTP round trip blurs it) the cost of one
read of a global every call reads (CALLCTL_APP, set in [globals], so it sits behind the published ones
in Asterisk's list) and of the membership test itself.
``.venv/bin/python -m bench.preanswer_globals [--numbers N]``."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiohttp

from callctl.flows.preanswer import buckets
from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair, free_rtp_range

LOOPS = 5000
# One loop per expression: LOOKUP replaced by what is measured; the log line gives the loop's seconds.
_LOOP = """
[bench-lookup-{name}]
exten => s,1,Set(T0=${{STRFTIME(,,%s.%6q)}})
 same => n,Set(I=0)
 same => n(loop),Set(X={lookup})
 same => n,Set(I=$[${{I}} + 1])
 same => n,GotoIf($[${{I}} < {loops}]?loop)
 same => n,Log(NOTICE,lookup-bench {name} ${{MATH(${{STRFTIME(,,%s.%6q)}}-${{T0}})}})
 same => n,Hangup()
"""


def loops(probe: str) -> dict[str, str]:
    lookups = {"local": "${I}", "app": "${CALLCTL_APP}", "pernumber": f"${{CALLCTL_PX_{probe}}}",
               "bucket": f"${{FIELDNUM(CALLCTL_PA_{probe[-2:]},-,{probe})}}"}
    return {name: _LOOP.format(name=name, lookup=lookup, loops=LOOPS) for name, lookup in lookups.items()}


def loop_us(inst: AsteriskInstance, name: str) -> float:
    """µs per iteration of the loop ``name`` (a Local channel running it), read back from the console."""
    console = inst.host_dir / "log" / "console.log"
    at = console.stat().st_size
    inst.rx(f"channel originate Local/s@bench-lookup-{name} application Wait 1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with console.open("rb") as f:
            f.seek(at)
            for line in f.read().decode(errors="replace").splitlines():
                if f"lookup-bench {name} " in line:
                    return float(line.rsplit(" ", 1)[1]) / LOOPS * 1e6
        time.sleep(0.2)
    raise TimeoutError(f"loop {name} did not report")


async def publish(session: aiohttp.ClientSession, base: str, values: dict[str, str]) -> float:
    t0 = time.perf_counter()
    for name, value in values.items():
        async with session.post(base + "asterisk/variable", params={"variable": name, "value": value}) as resp:
            await resp.read()
    return time.perf_counter() - t0


async def measure(inst: AsteriskInstance, numbers: int) -> None:
    base = inst.ari_url.rstrip("/") + "/ari/"
    headers = {"Authorization": aiohttp.encode_basic_auth(inst.ari_user, inst.ari_password)}
    keys = frozenset(f"339{n:08d}" for n in range(numbers))
    local = statistics.median(loop_us(inst, "local") for _ in range(3))
    app = statistics.median(loop_us(inst, "app") for _ in range(3))
    print(f"no published numbers: a loop step reading a channel variable {local:.1f} µs, CALLCTL_APP {app:.1f} µs")
    layouts = {
        "one global per number": ({f"CALLCTL_PX_{k}": "g1" for k in sorted(keys)}, "pernumber"),
        "100 buckets (FIELDNUM)": (buckets(keys, "g1"), "bucket"),
    }
    async with aiohttp.ClientSession(headers=headers) as session:
        for name, (values, member) in layouts.items():
            took_s = await publish(session, base, values)
            app_now = statistics.median(loop_us(inst, "app") for _ in range(3))
            test = statistics.median(loop_us(inst, member) for _ in range(3))
            longest = max(len(v) for v in values.values())
            print(f"{name}: {len(values):,} globals (longest {longest:,} chars) published over ARI in "
                  f"{took_s:.2f} s ({took_s / len(values) * 1e3:.2f} ms each); reading CALLCTL_APP "
                  f"{app_now:.1f} µs (+{app_now - app:.1f}); the membership test {test:.1f} µs "
                  f"(+{test - local:.1f} over a channel variable)", flush=True)
            for var in values:  # removed (no value) before the next layout
                async with session.post(base + "asterisk/variable", params={"variable": var}) as resp:
                    await resp.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=10_000)
    args = parser.parse_args()
    ensure_root()
    rtp_start, rtp_end = free_rtp_range()
    inst = AsteriskInstance(f"bench-pa-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=rtp_start, rtp_end=rtp_end, trunk_port=free_port_pair(),
                            extra_conf={"extensions.conf": "".join(loops(f"339{args.numbers // 2:08d}").values())})
    inst.start()
    try:
        asyncio.run(measure(inst, args.numbers))
    finally:
        inst.stop()


if __name__ == "__main__":
    main()
