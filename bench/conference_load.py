"""Conference access-code flow under SIPp load on one real Asterisk: callctl against the same flow
written natively in extensions.conf (bench/native.py), at stepped call rates, in the same run.

    .venv/bin/python -m bench.conference_load [--rates 2,4,8,12,16,20] [--step-s 20] [--hold-s 10]
                                               [--memory-calls 1000] [--out .state/bench]

Per implementation and rate: failed calls, CPU per call (Asterisk, callctl, PostgreSQL, SIPp),
p50/p99 of channel start -> answer and of the '#' key -> bridge entry (Asterisk's CEL log and SIPp's
own clock), callctl's event-loop lag. Then resident memory with --memory-calls calls up (callctl).
Rates are interleaved (native then callctl at each rate) so a neighbour's load hits both alike; an
implementation stops at its first step with a failed call. Writes results.json in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import callers, native
from bench.figures import Step, ari_event_types, parse_cel, timings
from callctl.store import conferences as store
from callctl.store.db import connect_pool
from callctl.store.migrate import migrate
from scripts.devstack import REPO, AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.support.asterisk import Daemon, render_prompts
from tests.support.postgres import MIGRATIONS, PostgresCluster

CALLCTL_ACCESS = "+33900000100"  # dialplan/numbers.yaml: the conference flow, English prompts
ROOM_SIZE = 10  # codes per booked conference (an organizer and 9 participants)
LEAD_MS = 1200  # from the answer to the first key: the code prompt has started
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def wakeups(pid: int) -> int:
    """Times the process's main thread (callctl's event loop) went to sleep and was woken: voluntary
    context switches. Per call it counts the loop's wake-ups (sockets, timers, threads), a figure
    far steadier than CPU time on a shared machine."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster and its children (the backends callctl's pool keeps open)."""
    try:
        master = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
    return pids


def pg_transactions(url: str) -> int:
    """Transactions committed or rolled back in the bench database so far (asyncpg runs a statement
    outside a transaction block as one): the engine's PostgreSQL round trips, near enough."""

    async def read() -> int:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            return int(await conn.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                           "WHERE datname = current_database()"))
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the bench's own loop is busy running the step
        return pool.submit(asyncio.run, read()).result()


def journal_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LAG_BUCKET = "callctl_event_loop_lag_distribution_seconds_bucket"

# The daemon's lines that say where a slow moment went (callctl.loopwatch, callctl.ari, the conference).
DIAG_EVENTS = ("event_loop_held", "ari_request_slow", "ari_events_late", "ari_answer_slow", "conference_join_slow")
_ID = re.compile(r"(?<=/)[^/]*[0-9][^/]*")  # an id in an ARI path (channel, bridge, playback)


def diag_summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind of diagnostic line of one step: how many, and medians of where the time went."""
    out: dict[str, Any] = {}

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
        return round(statistics.median(values), 1) if values else None

    for name in DIAG_EVENTS:
        rows = [line for line in lines if line.get("event") == name]
        if not rows:
            continue
        entry: dict[str, Any] = {"n": len(rows) + sum(int(r.get("unlogged") or 0) for r in rows)}
        if name == "event_loop_held":
            by: dict[str, int] = {}
            for r in rows:
                by[str(r.get("callback"))] = by.get(str(r.get("callback")), 0) + 1
            entry["by"] = dict(sorted(by.items(), key=lambda kv: -kv[1])[:5])
            entry["held_ms_p50"] = med(rows, "held_ms")
        elif name == "ari_request_slow":
            kinds: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                kinds.setdefault(f"{r.get('method')} {_ID.sub('*', str(r.get('uri')))}", []).append(r)
            entry["by"] = {k: {"n": len(v), "ms": med(v, "ms"), "queued_ms": med(v, "queued_ms"),
                               "served_ms": med(v, "served_ms")}
                           for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))[:6]}
        elif name == "ari_events_late":
            entry["events"] = sum(int(r.get("events", 0)) for r in rows)
            entry["worst_ms_max"] = max(float(r.get("worst_ms", 0)) for r in rows)
        elif name == "ari_answer_slow":
            entry.update(ms=med(rows, "ms"), engine_ms=med(rows, "engine_ms"), request_ms=med(rows, "request_ms"))
        else:
            entry.update({k: med(rows, k) for k in ("ms", "lookup_ms", "admit_ms", "queue_ms", "bridge_ms")})
            befores: dict[str, int] = {}
            for r in rows:
                befores[str(r.get("room_before"))] = befores.get(str(r.get("room_before")), 0) + 1
            entry["room_before"] = dict(sorted(befores.items(), key=lambda kv: -kv[1])[:4])
        out[name] = entry
    return out


class LagSampler:
    """callctl's event-loop lag over a step: its lag histogram (a tick every 50 ms, callctl.loopwatch)
    read from /metrics before and after; ``samples`` holds each tick of the step as its bucket's
    upper bound in ms (so a p99 of them is the bucket the p99 falls in)."""

    def __init__(self, http: str) -> None:
        self.url = f"http://{http}/metrics"
        self.samples: list[float] = []
        self._before: dict[float, int] = {}

    def _read(self) -> dict[float, int]:
        buckets: dict[float, int] = {}
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                for line in resp.read().decode().splitlines():
                    if line.startswith(LAG_BUCKET):
                        le = line.split('le="', 1)[1].split('"', 1)[0]
                        buckets[float("inf") if le == "+Inf" else float(le)] = int(float(line.split()[-1]))
        return buckets

    def __enter__(self) -> LagSampler:
        self._before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._read()
        below = 0
        for le in sorted(after):
            cumulative = after[le] - self._before.get(le, 0)
            self.samples.extend([min(le, 10.0) * 1000] * (cumulative - below))
            below = cumulative


@dataclass
class Bench:
    rates: list[float]
    step_s: float
    hold_s: float
    memory_calls: int
    memory_rate: float
    out: Path
    profile: Path | None = None
    ari_debug: bool = False
    impls: tuple[str, ...] = ("native", "callctl")
    daemon_env: dict[str, str] = field(default_factory=dict)  # CALLCTL_* settings of the daemon (a lever)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callctl-bench-")))
    steps: list[Step] = field(default_factory=list)
    diag: list[dict[str, Any]] = field(default_factory=list)  # per callctl step: where its slow moments went
    memory: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    _caller_base: int = 33611000000
    _cel_offset: int = 0
    db_url: str = ""

    # -- set-up --------------------------------------------------------------------------------
    async def book(self, url: str, conferences: int) -> dict[str, str]:
        """``conferences`` rooms of ROOM_SIZE codes, already led (participants join at once, as in
        ConfBridge); returns code -> room name."""
        pool = await connect_pool(url)
        codes: dict[str, str] = {}
        try:
            now = dt.datetime.now(dt.UTC)
            for n in range(conferences):
                conf, live, _ = await store.save_booking(
                    pool, subject=f"bench {n}", starts_at=now, ends_at=now + dt.timedelta(hours=12),
                    organizer=f"org{n}@bench.example",
                    participants=[f"p{n}-{i}@bench.example" for i in range(ROOM_SIZE - 1)],
                    access_numbers=[CALLCTL_ACCESS], max_members=ROOM_SIZE, organizer_leave_policy="continue")
                await store.mark_started(pool, conf.id)
                codes.update({c.code: f"room{n}" for c in live})
        finally:
            await pool.close()
        return codes

    def cel_since_last(self, inst: AsteriskInstance) -> list[str]:
        path = inst.host_dir / "log" / "cel-custom" / native.CEL_FILE
        if not path.exists():
            return []
        with path.open("rb") as f:
            f.seek(self._cel_offset)
            data = f.read()
        self._cel_offset += len(data)
        return data.decode(errors="replace").splitlines()

    # -- one step ------------------------------------------------------------------------------
    def run_step(self, impl: str, rate: float, calls: int, hold_s: float, inst: AsteriskInstance,
                 daemon: Daemon, pg_dir: Path, codes: list[str], sample_rss: bool = False,
                 keys: bool = True) -> Step:
        assert inst.proc is not None and daemon.proc is not None
        step_dir = self.work / f"{impl}-{rate:g}-{calls}"
        step_dir.mkdir()
        scenario = callers.scenario(step_dir, len(codes[0]) if keys else 0, LEAD_MS, int(hold_s * 1000))
        self._caller_base += 10000
        callers.write_codes(step_dir / "codes.csv", codes[:calls], self._caller_base)
        numbers = [str(self._caller_base + i) for i in range(calls)]
        self.cel_since_last(inst)  # skip what earlier steps left
        per_call_s = LEAD_MS / 1000 + (len(codes[0]) + 2) * 0.4 + hold_s
        pg = postgres_pids(pg_dir)
        pg_before = {p: _safe_cpu(p) for p in pg}
        before = (cpu_s(inst.proc.pid), cpu_s(daemon.proc.pid), 0.0, children_cpu_s())
        wakeups_before = wakeups(daemon.proc.pid)
        counts_before = self.engine_counts(daemon) if impl == "callctl" else {}
        rss: list[tuple[int, int]] = []
        stop = threading.Event()

        def watch_rss() -> None:
            while not stop.wait(1.0):
                assert inst.proc is not None and daemon.proc is not None
                rss.append((rss_kib(daemon.proc.pid), rss_kib(inst.proc.pid)))

        watcher = threading.Thread(target=watch_rss, daemon=True)
        if sample_rss:
            watcher.start()
        spy = None
        if self.profile is not None and impl == "callctl":
            # Collapsed stacks of the daemon under this load (py-spy, non-blocking sampling).
            self.profile.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(daemon.proc.pid), "--nonblocking", "--format", "raw", "--rate", "50",
                                    "-o", str(self.profile / f"callctl-{rate:g}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        console = inst.host_dir / "log" / "console.log"
        console_at = console.stat().st_size
        lines_at = len(daemon.lines)
        started = time.monotonic()
        with LagSampler(daemon.http) as lag:
            run = callers.run(inst.sip_port, native.NATIVE_ACCESS if impl == "native" else CALLCTL_ACCESS,
                              scenario, step_dir / "codes.csv", step_dir, calls=calls, rate=rate,
                              timeout_s=calls / rate + per_call_s + 60, media_port=50000)
        wall = time.monotonic() - started
        stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:  # a saturated machine: keep the step, lose the profile
                spy.kill()
                spy.wait(10)
        # Backends that ended during the step take their CPU with them (callctl's pool keeps its own).
        pg_s = sum(max(0.0, _safe_cpu(p) - was) for p, was in pg_before.items())
        after = (cpu_s(inst.proc.pid), cpu_s(daemon.proc.pid), pg_s, children_cpu_s())
        engine_wakeups = wakeups(daemon.proc.pid) - wakeups_before
        if impl == "callctl":
            time.sleep(0.5)  # the last calls' journal lines and log lines are written a few turns later
            counts_after = self.engine_counts(daemon)
        cel = parse_cel(self.cel_since_last(inst))
        answer, join, joined = timings(cel, run.hash_at, numbers)
        step = Step(impl, rate, calls, run.successful, run.failed, joined, wall,
                    asterisk_cpu_s=after[0] - before[0],
                    engine_cpu_s=(after[1] - before[1]) if impl == "callctl" else 0.0,
                    postgres_cpu_s=after[2] - before[2], sipp_cpu_s=after[3] - before[3],
                    answer_ms=answer, join_ms=join, lag_ms=lag.samples if impl == "callctl" else [],
                    load_avg=os.getloadavg(), engine_wakeups=engine_wakeups if impl == "callctl" else 0)
        if impl == "callctl":
            step.engine_counts = {k: counts_after[k] - counts_before[k] for k in counts_before}
            diag_lines = [line for line in daemon.lines[lines_at:] if line.get("event") in DIAG_EVENTS]
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / f"diag-{impl}-{rate:g}-{calls}.jsonl").open("w") as f:
                f.writelines(json.dumps(line) + "\n" for line in diag_lines)
            summary = diag_summary(diag_lines)
            self.diag.append({"impl": impl, "rate": rate, "calls": calls, **summary})
            print(f"  where the slow moments went: {json.dumps(summary)}", flush=True)
        if self.ari_debug and impl == "callctl":
            with console.open("rb") as f:
                f.seek(console_at)
                step.ari_events = ari_event_types(f.read().decode(errors="replace"))
        if sample_rss and rss:
            up = _peak_up(cel, joined=keys)
            engine_peak, asterisk_peak = max(r[0] for r in rss), max(r[1] for r in rss)
            self.memory[impl] = {"calls": calls, "peak_calls_up": up, "engine_rss_mib": round(engine_peak / 1024, 1),
                                 "asterisk_rss_mib": round(asterisk_peak / 1024, 1),
                                 "engine_rss_idle_mib": round(rss[0][0] / 1024, 1),
                                 "failed": run.failed, "joined": joined, "keyed_code": keys}
        if not step.ok:
            (step_dir / "sipp-stderr.txt").write_text(run.stderr)
            (step_dir / "daemon-log.txt").write_text("\n".join(daemon.raw[-20000:]))  # why the call failed
            print(f"  {impl} @ {rate:g}/s: {run.failed} failed, {joined}/{calls} joined; see {step_dir}", flush=True)
        return step

    def engine_counts(self, daemon: Daemon) -> dict[str, int]:
        return {"pg_transactions": pg_transactions(self.db_url), "log_lines": len(daemon.raw),
                "journal_lines": journal_lines(self.work / "spool" / "open-calls.jsonl")}

    # -- the whole run -------------------------------------------------------------------------
    async def run(self) -> None:
        cluster = PostgresCluster.throwaway_cluster()
        await asyncio.to_thread(cluster.start)
        inst: AsteriskInstance | None = None
        daemon: Daemon | None = None
        try:
            url = self.db_url = await asyncio.to_thread(cluster.new_database, "bench")
            await migrate(url, MIGRATIONS)
            need = max(self.memory_calls, int(max(self.rates) * self.step_s) + 1)
            code_map = await self.book(url, -(-need // ROOM_SIZE))
            codes = list(code_map)
            ensure_root()
            inst = AsteriskInstance(f"bench-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                                    rtp_start=40000, rtp_end=47999, trunk_port=free_port_pair(),
                                    extra_conf=native.extra_conf(code_map))
            (inst.host_dir / "log" / "cel-custom").mkdir(parents=True, exist_ok=True)
            inst.start()
            render_prompts(inst)
            daemon = self.start_daemon(inst, url)
            if self.ari_debug:  # every event sent to callctl, pretty-printed into the console log
                inst.rx("ari set debug all on")  # "all": the REST requests too, not only the app's events
            self.machine = machine(inst)
            print(f"machine: {self.machine['cpu']}, {self.machine['ram_gib']} GiB, kernel {self.machine['kernel']}, "
                  f"{self.machine['asterisk']}; load {self.machine['load_avg_start']}", flush=True)
            failed: set[str] = set()
            for rate in self.rates:
                for impl in self.impls:
                    if impl in failed:
                        continue
                    calls = max(1, int(rate * self.step_s))
                    step = self.run_step(impl, rate, calls, self.hold_s, inst, daemon, cluster.data_dir, codes)
                    self.steps.append(step)
                    print(_line(step), flush=True)
                    if not step.ok:
                        failed.add(impl)
            if self.memory_calls:
                ramp_s = self.memory_calls / self.memory_rate
                # Callers who key nothing: each call is answered, hears the code prompt, then waits in
                # Stasis without media. 1,000 calls in mixing rooms would need ~4 cores of Asterisk mixing.
                self.run_step("callctl", self.memory_rate, self.memory_calls, ramp_s + 15, inst, daemon,
                              cluster.data_dir, codes, sample_rss=True, keys=False)
                print(f"memory: {json.dumps(self.memory.get('callctl'))}", flush=True)
            self.machine["load_avg_end"] = list(os.getloadavg())
        finally:
            if daemon is not None:
                daemon.stop()
                daemon.close_pipes()
            if inst is not None:
                inst.stop()
            await asyncio.to_thread(cluster.destroy)
        self.save()
        failed_memory = any(m.get("failed") for m in self.memory.values())
        if inst is not None and self.steps and all(s.ok for s in self.steps) and not failed_memory:
            # Nothing to diagnose: drop SIPp's files and the instance's logs (kept after a failure).
            shutil.rmtree(self.work, ignore_errors=True)
            shutil.rmtree(inst.host_dir, ignore_errors=True)

    def start_daemon(self, inst: AsteriskInstance, url: str) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCTL_")}
        env.update({
            "CALLCTL_DATABASE_URL": url, "CALLCTL_ARI_URL": inst.ari_url, "CALLCTL_ARI_USER": inst.ari_user,
            "CALLCTL_ARI_PASSWORD": inst.ari_password, "CALLCTL_ARI_APP": inst.ari_app,
            "CALLCTL_DIALPLAN_DIR": str(self.dialplan()), "CALLCTL_SPOOL_DIR": str(self.work / "spool"),
            "CALLCTL_RUNTIME_DIR": str(self.work / "run"), "CALLCTL_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "CALLCTL_AGI_LISTEN": "", "CALLCTL_LOG_LEVEL": "info",
            "CALLCTL_OUTBOX_DIR": str(self.work / "outbox"),
        })
        env.update(self.daemon_env)
        d = Daemon(env, self.work).start()
        d.wait_until_ready(60)
        return d

    def dialplan(self) -> Path:
        """The repo's dialplan, but a caller who keys nothing waits for the first digit long enough to
        stay up for the memory figure (callers who key their code are not affected)."""
        copy = self.work / "dialplan"
        shutil.copytree(REPO / "dialplan", copy)
        flow = copy / "flows" / "conference.yaml"
        text = flow.read_text()
        wait_s = int(self.memory_calls / self.memory_rate + 120)
        extra = f"\n        first_digit_timeout: {wait_s}"
        flow.write_text(text.replace("        attempts: 3", "        attempts: 3" + extra, 1))
        assert f"first_digit_timeout: {wait_s}" in flow.read_text(), "conference.yaml changed: update bench"
        return copy

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"machine": self.machine, "steps": [s.summary() for s in self.steps], "memory": self.memory,
                "diag": self.diag,
                "settings": {"daemon_env": self.daemon_env, "rates": self.rates, "step_s": self.step_s,
                             "hold_s": self.hold_s,
                             "room_size": ROOM_SIZE, "memory_calls": self.memory_calls,
                             "memory_rate": self.memory_rate},
                "raw": [{"impl": s.impl, "rate": s.rate, "answer_ms": s.answer_ms, "join_ms": s.join_ms}
                        for s in self.steps]}
        (self.out / "conference.json").write_text(json.dumps(data, indent=1))
        print(f"results: {self.out / 'conference.json'} (SIPp work files, kept after a failed call: {self.work})",
              flush=True)


def _safe_cpu(pid: int) -> float:
    try:
        return cpu_s(pid)
    except OSError:
        return 0.0


def _peak_up(cel: dict[str, Any], joined: bool) -> int:
    """Most calls up at the same time: joined (or else answered) and not yet hung up."""
    key = "join" if joined else "answer"
    up_at = [(getattr(t, key), t.hangup) for t in cel.values() if getattr(t, key) is not None]
    edges = sorted([(at, 1) for at, _ in up_at] + [(end, -1) for _, end in up_at if end is not None])
    up = peak = 0
    for _, delta in edges:
        up += delta
        peak = max(peak, up)
    return peak


def _line(s: Step) -> str:
    d = s.summary()
    return (f"{s.impl:8} {s.rate:5g}/s {s.calls:5} calls {'ok  ' if s.ok else 'FAIL'} "
            f"cpu/call asterisk {d['asterisk_cpu_ms_per_call']} ms, callctl {d['engine_cpu_ms_per_call']} ms, "
            f"pg {d['postgres_cpu_ms_per_call']} ms; answer p50/p99 {d['answer_ms_p50']}/{d['answer_ms_p99']} ms; "
            f"#->join p50/p99 {d['join_ms_p50']}/{d['join_ms_p99']} ms; lag p99 {d['lag_ms_p99']} ms; "
            + (f"callctl wake-ups/call {d['engine_wakeups_per_call']}; per call {d['engine_counts_per_call']}; "
               if s.impl == "callctl" else "")
            + f"load {s.load_avg[0]:.2f}")


def machine(inst: AsteriskInstance | None = None) -> dict[str, Any]:
    """What the figures were taken on: CPU, RAM, kernel, Asterisk, Python, date and load."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": f"{info.get('Model name', '?').strip()} x {os.cpu_count()}",
        "ram_gib": round(mem_kib / 1024 / 1024, 1), "kernel": os.uname().release,
        "python": sys.version.split()[0], "load_avg_start": list(os.getloadavg()),
    }
    if inst is not None:
        out["asterisk"] = inst.rx("core show version", check=False).strip().split(" built")[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,4,8,12,16,20", help="calls/s, comma-separated, increasing")
    parser.add_argument("--step-s", type=float, default=20.0, help="seconds of new calls per step")
    parser.add_argument("--hold-s", type=float, default=10.0, help="seconds each caller stays in the room")
    parser.add_argument("--memory-calls", type=int, default=1000, help="calls up for the memory figure (0: skip)")
    parser.add_argument("--memory-rate", type=float, default=12.0, help="calls/s while filling up for memory")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench")
    parser.add_argument("--profile", type=Path, help="py-spy the daemon in each callctl step into this folder")
    parser.add_argument("--impls", default="native,callctl", help="which implementations to run")
    parser.add_argument("--ari-debug", action="store_true", help="count the ARI events sent to callctl, by type "
                        "(Asterisk logs each one: costs Asterisk CPU, do not compare CPU figures)")
    parser.add_argument("--daemon-env", default="", help="daemon settings for a before/after, e.g. "
                        "CALLCTL_EVENT_LOOP=asyncio,CALLCTL_ARI_REST_TRANSPORT=http")
    args = parser.parse_args()
    rates = sorted(float(r) for r in args.rates.split(",") if r.strip())
    bench = Bench(rates, args.step_s, args.hold_s, args.memory_calls, args.memory_rate, args.out, args.profile,
                  args.ari_debug, tuple(i.strip() for i in args.impls.split(",") if i.strip()),
                  daemon_env=dict(kv.split("=", 1) for kv in args.daemon_env.split(",") if "=" in kv))
    asyncio.run(bench.run())


if __name__ == "__main__":
    main()
