"""`make bench`: every benchmark in one bounded run (about 10 minutes on 2 cores), then one report
whose last lines are the two ratios of issue 9.

    .venv/bin/python -m bench [--rates 2,4,8,12,16,20] [--step-s 20] [--hold-s 10] [--memory-calls 1000]
                              [--skip cdr,rating,trace,agi,conference] [--out .state/bench]
                              [--png docs/bench-latency.png]

Longer runs: more and higher rates, longer steps and holds (e.g. --rates 2,4,8,16,24,32 --step-s 60
--hold-s 30). Figures go to --out (JSON) and the plot to --png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.figures import Step, goals, ratios, saturation, sustained_rate
from bench.plot import PNG, plot
from scripts.devstack import REPO


def stream(args: list[str]) -> str:
    """Run a benchmark module, echoing its output as it comes; returns the output."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"bench: {args[0]} failed (exit {proc.returncode}); its output is above")
    return "".join(lines)


def steps_of(results: dict[str, Any]) -> list[Step]:
    """Rebuild enough of each step for the verdicts and ratios (figures.Step) from results.json."""
    out = []
    for s in results["steps"]:
        calls = s["calls"]
        step = Step(s["impl"], s["rate"], calls, s["successful"], s["failed"], s["joined"],
                    s["wall_s"], asterisk_cpu_s=s["asterisk_cpu_ms_per_call"] * calls / 1000,
                    engine_cpu_s=s["engine_cpu_ms_per_call"] * calls / 1000, postgres_cpu_s=0.0, sipp_cpu_s=0.0)
        for key in ("answer_ms", "join_ms"):  # the raw latencies, for the p99s of the goals
            raw = next((r for r in results.get("raw", []) if r["impl"] == s["impl"] and r["rate"] == s["rate"]), None)
            setattr(step, key, list(raw[key]) if raw else [])
        lag = s.get("lag_ms_p99")
        step.lag_ms = [] if lag is None else [float(lag)]
        step.load_avg = tuple(s.get("load_avg") or (0.0, 0.0, 0.0))  # type: ignore[assignment]
        out.append(step)
    return out


def report(out: Path, texts: dict[str, str]) -> str:
    lines = ["", "=" * 100, "callctl benchmarks (issue 9)"]
    conf_path = out / "conference.json"
    conf = json.loads(conf_path.read_text()) if "conference" in texts and conf_path.exists() else None
    if conf:
        m = conf["machine"]
        lines.append(f"date {m['date']}  machine {m['cpu']}, {m['ram_gib']} GiB RAM, kernel {m['kernel']}, "
                     f"{m.get('asterisk', '?')}, Python {m['python']}")
        lines.append(f"load average at start {m['load_avg_start']}, at end {m.get('load_avg_end')} "
                     "(a shared machine: other developers' tests run alongside)")
        st = conf["settings"]
        lines.append(f"conference flow: rooms of {st['room_size']}, each caller keys 8 digits + #, stays "
                     f"{st['hold_s']:g} s; {st['step_s']:g} s of new calls per rate step")
        lines.append(f"{'impl':8} {'rate':>5} {'calls':>5} {'ok':>4} {'ast ms/call':>11} {'ctl ms/call':>11} "
                     f"{'pg ms/call':>10} {'answer p50/p99':>15} {'#->join p50/p99':>16} {'lag p99':>8} {'load':>5}")
        for s in conf["steps"]:
            lines.append(f"{s['impl']:8} {s['rate']:5g} {s['calls']:5} {'yes' if s['ok'] else 'NO':>4} "
                         f"{s['asterisk_cpu_ms_per_call']:11} {s['engine_cpu_ms_per_call']:11} "
                         f"{s['postgres_cpu_ms_per_call']:10} {_pair(s, 'answer'):>15} {_pair(s, 'join'):>16} "
                         f"{s['lag_ms_p99']!s:>8} {s['load_avg'][0]:5.2f}")
        mem = conf["memory"].get("callctl")
        if mem:
            lines.append(f"memory: {mem['peak_calls_up']} of {mem['calls']} calls up at once "
                         f"({mem['failed']} failed): callctl RSS {mem['engine_rss_mib']} MiB "
                         f"(idle {mem['engine_rss_idle_mib']} MiB), Asterisk RSS {mem['asterisk_rss_mib']} MiB")
    for name in ("cdr", "rating", "trace", "agi"):
        if name in texts:
            lines.append(f"--- {name}")
            lines.extend(line for line in texts[name].strip().splitlines() if not line.startswith("asterisk-root"))
    if conf:
        steps = steps_of(conf)
        r = ratios(steps)
        native, mine = sustained_rate(steps, "native"), sustained_rate(steps, "callctl")
        lines.append("=" * 100)
        lines.append(f"sustained with zero failed calls: native {native:g} calls/s, callctl {mine:g} calls/s "
                     f"(highest step run: {max(s.rate for s in steps):g}/s)")
        cpu = "n/a" if r.cpu is None else f"{r.cpu:.3f}"
        rate = "n/a" if r.rate is None else f"{r.rate:.2f}"
        lines.append(f"RATIO callctl CPU / Asterisk CPU per call (at {r.cpu_step_rate:g} calls/s): {cpu}  "
                     "(goal <= 0.10)")
        lines.append(f"RATIO callctl sustained rate / native sustained rate: {rate}  (goal >= 0.9)")
        lines.append("GOALS of issue 17 (conference flow, this run):")
        for goal in goals(steps):
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[goal.ok]
            lines.append(f"  {verdict}  {goal.name}: {goal.measured}  (goal {goal.limit})")
        for note in saturation(steps) or ["machine not saturated by these figures (native tails flat)"]:
            lines.append(f"  NOTE  {note}")
    return "\n".join(lines)


def _pair(s: dict[str, Any], key: str) -> str:
    return f"{s[f'{key}_ms_p50']}/{s[f'{key}_ms_p99']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,4,8,12,16,20")
    parser.add_argument("--step-s", default="20")
    parser.add_argument("--hold-s", default="10")
    parser.add_argument("--memory-calls", default="1000")
    parser.add_argument("--skip", default="", help="comma-separated: cdr, rating, trace, agi, conference")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench")
    parser.add_argument("--png", type=Path, default=PNG)
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.monotonic()
    texts: dict[str, str] = {}
    if "cdr" not in skip:
        texts["cdr"] = stream(["bench.cdr_pipeline", "--records", "20000"])
    if "rating" not in skip:
        texts["rating"] = stream(["bench.rating"])
    if "trace" not in skip:
        texts["trace"] = stream(["bench.trace"])
    if "agi" not in skip:
        texts["agi"] = stream(["bench.agi_gate", "--out", str(args.out)])
    if "conference" not in skip:
        texts["conference"] = stream(["bench.conference_load", "--rates", args.rates, "--step-s", args.step_s,
                                      "--hold-s", args.hold_s, "--memory-calls", args.memory_calls,
                                      "--out", str(args.out)])
        plot(json.loads((args.out / "conference.json").read_text()), args.png)
        print(f"plot: {args.png}")
    print(report(args.out, texts))
    print(f"(whole run: {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
