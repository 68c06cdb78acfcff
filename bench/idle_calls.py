"""Idle calls held up in one engine (issue 17: 10,000 idle calls at <= 20 KiB each), on one real
Asterisk with the real daemon, SIPp placing callers who key nothing (bench/callers.py's idle
scenario, as in the conference bench's memory figure).

    .venv/bin/python -m bench.idle_calls [--max-calls 10000] [--first 1000] [--rate 40]
                                         [--rtp 10000-39999] [--out .state/bench]

One SIPp run places up to --max-calls calls at --rate calls/s, every caller staying up until the
last is placed. Each time the calls up in Asterisk reach a step (1k, 2k, 4k, ... then --max-calls)
the engine's resident memory is read (no tracemalloc in the daemon: RSS only). Per step: engine RSS
over idle / calls up, and the marginal figure (RSS growth / calls added since the step before),
whose trend says whether a call costs more as calls grow. The run stops at the first sign of
distress (a failed call, calls that stop coming up, Asterisk or the engine gone) and names the limit
hit: file descriptors, RTP ports, SIPp or CPU. Anything beyond the last step reached is an
extrapolation, printed as such. Writes idle.json in --out and a GOAL line with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import callers
from bench.conference_load import CALLCTL_ACCESS, LEAD_MS, Bench, LagSampler, machine, rss_kib
from callctl.store.migrate import migrate
from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.asterisk import Daemon
from tests.support.postgres import MIGRATIONS, PostgresCluster

GOAL_CALLS = 10_000
GOAL_KIB_PER_CALL = 20.0
NOFILE = 262_144  # for Asterisk, the daemon and SIPp (inherited): an idle call holds 2-3 descriptors in Asterisk
STALL_S = 30.0  # calls up not growing this long while SIPp still places calls: distress


# -- pure pieces (tests/unit/test_idle_calls.py) ---------------------------------------------------
def step_targets(first: int, max_calls: int) -> list[int]:
    """Doubling steps from ``first`` below ``max_calls``, then ``max_calls`` itself."""
    if first < 1 or max_calls < 1:
        raise ValueError(f"steps: first ({first}) and max calls ({max_calls}) must be at least 1")
    steps: list[int] = []
    n = first
    while n < max_calls:
        steps.append(n)
        n *= 2
    return [*steps, max_calls]


@dataclass(frozen=True)
class Point:
    """One step reached: calls up in Asterisk and the processes' resident memory then."""
    target: int
    calls_up: int
    engine_rss_kib: int
    asterisk_rss_kib: int
    asterisk_fds: int
    load_1m: float
    lag_ms: float | None = None


def per_call_kib(idle_kib: int, point: Point) -> float:
    """Engine RSS over idle, per call up."""
    return (point.engine_rss_kib - idle_kib) / point.calls_up if point.calls_up else 0.0


def marginal_kib(idle_kib: int, points: list[Point]) -> list[float]:
    """KiB each step's added calls cost: RSS growth / calls added since the step before (idle first).
    A step that added no call (reached while the one before settled) is left out."""
    out: list[float] = []
    prev_calls, prev_rss = 0, idle_kib
    for p in points:
        added = p.calls_up - prev_calls
        if added > 0:
            out.append((p.engine_rss_kib - prev_rss) / added)
            prev_calls, prev_rss = p.calls_up, p.engine_rss_kib
    return out


def trend(marginals: list[float], tolerance: float = 0.25) -> str:
    """'flat' when the later steps' marginal cost is within ``tolerance`` of the earlier ones' (or
    below), 'growing' when above, 'unknown' with fewer than two steps."""
    if len(marginals) < 2:
        return "unknown"
    half = len(marginals) // 2
    early = sum(marginals[:half]) / half
    late = sum(marginals[half:]) / (len(marginals) - half)
    return "growing" if late > early * (1 + tolerance) and late - early > 1.0 else "flat"


def extrapolate(idle_kib: int, points: list[Point], calls: int) -> float:
    """Engine KiB per call at ``calls`` calls up: the straight line fitted through the steps (least
    squares of RSS on calls up) carried on to ``calls``; one step: its own per-call figure."""
    xs = [float(p.calls_up) for p in points]
    ys = [float(p.engine_rss_kib) for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return per_call_kib(idle_kib, points[-1])
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return (my + slope * (calls - mx) - idle_kib) / calls


def verdict(idle_kib: int, points: list[Point], limit: str | None) -> str:
    """The GOAL line: PASS only when GOAL_CALLS calls were up and each cost at most GOAL_KIB_PER_CALL."""
    head = f"GOAL {GOAL_CALLS:,} idle calls up in one engine at <= {GOAL_KIB_PER_CALL:g} KiB each:"
    if not points:
        return f"{head} FAIL (no step reached; limit: {limit or 'unknown'})"
    last = points[-1]
    measured = per_call_kib(idle_kib, last)
    if last.calls_up >= GOAL_CALLS:
        ok = measured <= GOAL_KIB_PER_CALL
        return f"{head} {'PASS' if ok else 'FAIL'} ({last.calls_up:,} up, {measured:.1f} KiB a call, measured)"
    guess = extrapolate(idle_kib, points, GOAL_CALLS)
    return (f"{head} FAIL (not reached: {last.calls_up:,} up at {measured:.1f} KiB a call, limit: "
            f"{limit or 'max calls asked'}; extrapolated, not measured: {guess:.1f} KiB a call at {GOAL_CALLS:,})")


def failed_calls(sipp_errors: str) -> list[str]:
    """SIPp's error file without its header and its overload warnings (SIPp short of CPU, no call lost)."""
    return [line for line in sipp_errors.splitlines()
            if line.strip() and "The following events occurred" not in line and "Overload warning" not in line]


def limit_from(console: str, sipp_errors: str, load_1m: float, cores: int, fds: int = 0,
               nofile: int = 0) -> str | None:
    """Which limit the logs and figures name, if any."""
    if "Too many open files" in console or "Too many open files" in sipp_errors or (
            nofile and fds >= nofile * 0.98):
        return f"file descriptors (Asterisk {fds:,} open, RLIMIT_NOFILE {nofile:,})" if nofile else "file descriptors"
    if re.search(r"No RTP ports remaining|Unable to create RTP|Unable to bind RTP", console, re.I):
        return "RTP ports"
    if failed_calls(sipp_errors):
        return "SIPp (failed calls, see its errors.txt)"
    if load_1m > 2 * cores:
        return f"CPU (load {load_1m:.1f} on {cores} cores)"
    return None


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class IdleBench:
    max_calls: int
    first: int
    rate: float
    rtp: tuple[int, int]
    out: Path
    settle_s: float = 5.0
    points: list[Point] = field(default_factory=list)
    idle_kib: int = 0
    limit: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    async def run(self) -> None:
        raise_nofile()
        # Reused: the conference bench's daemon start-up and its dialplan where a silent caller waits
        # (first_digit_timeout) longer than the whole ramp.
        base = Bench([], 0.0, 0.0, self.max_calls, self.rate, self.out)
        cluster = PostgresCluster.throwaway_cluster()
        await asyncio.to_thread(cluster.start)
        inst: AsteriskInstance | None = None
        daemon: Daemon | None = None
        try:
            url = await asyncio.to_thread(cluster.new_database, "idle")
            await migrate(url, MIGRATIONS)
            ensure_root()
            inst = AsteriskInstance(f"idle-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                                    rtp_start=self.rtp[0], rtp_end=self.rtp[1], trunk_port=free_port_pair())
            inst.start()
            daemon = base.start_daemon(inst, url)
            self.info = machine(inst)
            self.info["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            print(f"machine: {self.info['cpu']}, {self.info['ram_gib']} GiB, {self.info['asterisk']}; "
                  f"load {self.info['load_avg_start']}; RTP {self.rtp[0]}-{self.rtp[1]}; "
                  f"RLIMIT_NOFILE {self.info['nofile']}", flush=True)
            await asyncio.to_thread(self.place, base.work, inst, daemon)
            self.info["load_avg_end"] = list(os.getloadavg())
        finally:
            if daemon is not None:
                daemon.stop()
                daemon.close_pipes()
            if inst is not None:
                inst.stop(timeout_s=60)
            await asyncio.to_thread(cluster.destroy)
        self.report()
        if inst is not None and self.limit is None:
            shutil.rmtree(base.work, ignore_errors=True)
            shutil.rmtree(inst.host_dir, ignore_errors=True)

    def place(self, work: Path, inst: AsteriskInstance, daemon: Daemon) -> None:
        assert inst.proc is not None and daemon.proc is not None
        step_dir = work / "idle"
        step_dir.mkdir(parents=True)
        ramp_s = self.max_calls / self.rate
        hold_ms = int((ramp_s + 60) * 1000)  # every caller still up when the last is placed and measured
        scenario = callers.scenario(step_dir, 0, LEAD_MS, hold_ms)
        callers.write_codes(step_dir / "codes.csv", ["0"] * self.max_calls, 33620000000)
        time.sleep(self.settle_s)
        self.idle_kib = rss_kib(daemon.proc.pid)
        print(f"engine idle: {self.idle_kib / 1024:.1f} MiB", flush=True)
        result: dict[str, Any] = {}

        def sipp() -> None:
            result["run"] = callers.run(inst.sip_port, CALLCTL_ACCESS, scenario, step_dir / "codes.csv", step_dir,
                                        calls=self.max_calls, rate=self.rate,
                                        timeout_s=ramp_s + hold_ms / 1000 + 120, media_port=free_port_pair())

        runner = threading.Thread(target=sipp, daemon=True, name="sipp")
        console = inst.host_dir / "log" / "console.log"
        console_at = console.stat().st_size
        targets = step_targets(self.first, self.max_calls)
        started = time.monotonic()
        best, best_at = 0, started
        with LagSampler(daemon.http) as lag:
            runner.start()
            while targets and runner.is_alive():
                time.sleep(2.0)
                if inst.proc.poll() is not None or daemon.proc.poll() is not None:
                    self.limit = "Asterisk or the engine exited"
                    break
                up = calls_up(inst)
                errors = _read(step_dir / "errors.txt")
                load = os.getloadavg()[0]
                if up > best:
                    best, best_at = up, time.monotonic()
                if up >= targets[0]:
                    time.sleep(self.settle_s)  # the last calls placed finish their prompt
                    point = Point(targets.pop(0), calls_up(inst), rss_kib(daemon.proc.pid), rss_kib(inst.proc.pid),
                                  _fds(inst.proc.pid), load, max(lag.samples[-10:], default=None))
                    self.points.append(point)
                    print(_line(self.idle_kib, self.points), flush=True)
                    continue
                placed = min(self.max_calls, (time.monotonic() - started) * self.rate)
                stalled = time.monotonic() - best_at > STALL_S and placed > best
                fds = _fds(inst.proc.pid)
                nofile = int(self.info["nofile"])
                if failed_calls(errors) or stalled or fds >= nofile * 0.98:
                    text = _read(console, console_at)
                    self.limit = limit_from(text, errors, load, os.cpu_count() or 1, fds, nofile) or (
                        f"calls stopped coming up at {best:,} ({placed:,.0f} placed; load {load:.1f})")
                    # The calls up when the limit was hit are still up: the last figure measured.
                    up = calls_up(inst)
                    if up > (self.points[-1].calls_up if self.points else 0):
                        self.points.append(Point(up, up, rss_kib(daemon.proc.pid), rss_kib(inst.proc.pid),
                                                 _fds(inst.proc.pid), load, max(lag.samples[-10:], default=None)))
                        print(_line(self.idle_kib, self.points) + " (at the limit)", flush=True)
                    break
        sipp_pid = _child("sipp")
        if sipp_pid is not None:  # measured: the rest of the hold would only wait
            os.kill(sipp_pid, signal.SIGTERM)
        runner.join(60)
        overloads = _read(step_dir / "errors.txt").count("Overload warning")
        if overloads:
            self.info["sipp_overload_warnings"] = overloads  # SIPp's watchdog: it was short of CPU
        if targets and self.limit is None and "run" in result:
            run = result["run"]
            self.limit = f"SIPp ended early (exit {run.returncode}): {run.stderr[-300:]}"

    def report(self) -> None:
        marg = marginal_kib(self.idle_kib, self.points)
        goal = verdict(self.idle_kib, self.points, self.limit)
        data = {"machine": self.info, "settings": {"max_calls": self.max_calls, "first": self.first,
                                                   "rate": self.rate, "rtp": list(self.rtp)},
                "engine_idle_kib": self.idle_kib, "points": [asdict(p) for p in self.points],
                "per_call_kib": [round(per_call_kib(self.idle_kib, p), 2) for p in self.points],
                "marginal_kib": [round(m, 2) for m in marg], "trend": trend(marg), "limit": self.limit,
                "goal": goal}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "idle.json").write_text(json.dumps(data, indent=1))
        print(f"limit: {self.limit or 'none hit (stopped at --max-calls)'}; per-call trend: {trend(marg)}", flush=True)
        print(f"results: {self.out / 'idle.json'}", flush=True)
        print(goal, flush=True)


def raise_nofile() -> None:
    """As root, lift RLIMIT_NOFILE for this process and what it starts; else up to the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def calls_up(inst: AsteriskInstance) -> int:
    """Asterisk's 'N active calls'."""
    out = inst.rx("core show channels count", check=False)
    found = re.search(r"(\d+) active calls?", out)
    return int(found.group(1)) if found else 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _read(path: Path, offset: int = 0) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _child(name: str) -> int | None:
    """The pid of this process's child called ``name`` (the SIPp this bench started)."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if comm == name and int(text.rsplit(")", 1)[1].split()[1]) == me:
                return int(stat.parent.name)
    return None


def _line(idle_kib: int, points: list[Point]) -> str:
    p = points[-1]
    marg = (marginal_kib(idle_kib, points) or [0.0])[-1]
    return (f"step {p.target:6,}: {p.calls_up:6,} up; engine {p.engine_rss_kib / 1024:7.1f} MiB, "
            f"{per_call_kib(idle_kib, p):5.1f} KiB a call ({marg:5.1f} marginal); Asterisk "
            f"{p.asterisk_rss_kib / 1024:7.1f} MiB, {p.asterisk_fds:,} fds; lag {p.lag_ms} ms; load {p.load_1m:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-calls", type=int, default=GOAL_CALLS, help="calls up at the last step")
    parser.add_argument("--first", type=int, default=1000, help="the first step; each next one doubles")
    parser.add_argument("--rate", type=float, default=40.0, help="calls/s while filling up")
    parser.add_argument("--rtp", default="10000-39999", help="Asterisk's RTP port range (2 ports a call)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="seconds before reading RSS, idle and per step")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench")
    args = parser.parse_args()
    low, _, high = args.rtp.partition("-")
    bench = IdleBench(args.max_calls, args.first, args.rate, (int(low), int(high)), args.out, args.settle_s)
    asyncio.run(bench.run())


if __name__ == "__main__":
    main()
