"""Pure arithmetic of the conference benchmark: the CEL log into per-call timings, percentiles, the
verdict of a rate step, the sustained rate and the two ratios the issue asks for. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class CallTimes:
    """Wall-clock times (s) of one caller's channel, from the CEL log (first of each event)."""

    start: float | None = None
    answer: float | None = None
    join: float | None = None
    hangup: float | None = None


def parse_cel(lines: Iterable[str]) -> dict[str, CallTimes]:
    """``EVENT,epoch.us,caller,...`` lines (bench/native.py's cel_custom mapping) -> caller -> times."""
    calls: dict[str, CallTimes] = {}
    slot = {"CHAN_START": "start", "ANSWER": "answer", "BRIDGE_ENTER": "join", "HANGUP": "hangup"}
    for line in lines:
        bits = line.strip().split(",")
        if len(bits) < 3 or bits[0] not in slot:
            continue
        try:
            at = float(bits[1])
        except ValueError:
            continue
        times = calls.setdefault(bits[2], CallTimes())
        if getattr(times, slot[bits[0]]) is None:
            setattr(times, slot[bits[0]], at)
    return calls


def pct(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


@dataclass
class Step:
    """One implementation at one call rate."""

    impl: str  # "native" or "callctl"
    rate: float
    calls: int
    successful: int
    failed: int
    joined: int
    wall_s: float
    asterisk_cpu_s: float
    engine_cpu_s: float  # callctl's process; 0 for the native dialplan
    postgres_cpu_s: float
    sipp_cpu_s: float
    answer_ms: list[float] = field(default_factory=list)  # channel start -> answered
    join_ms: list[float] = field(default_factory=list)  # first packet of '#' -> bridge entry
    lag_ms: list[float] = field(default_factory=list)  # event-loop lag samples (callctl only)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ari_events: dict[str, int] = field(default_factory=dict)  # type -> count sent to callctl (--ari-debug)
    engine_wakeups: int = 0  # callctl's event loop: voluntary context switches of its main thread
    # callctl's work counted over the step (not timed: steady under a neighbour's load): PostgreSQL
    # transactions of the bench database, log lines written, open-calls journal lines appended.
    engine_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Zero failed calls: every call answered by SIPp's script and joined its room."""
        return self.calls > 0 and self.failed == 0 and self.successful == self.calls and self.joined == self.calls

    def per_call_ms(self, cpu_s: float) -> float:
        return cpu_s * 1000 / self.calls if self.calls else 0.0

    def summary(self) -> dict[str, object]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {
            "impl": self.impl, "rate": self.rate, "calls": self.calls, "ok": self.ok, "successful": self.successful,
            "failed": self.failed,
            "joined": self.joined, "wall_s": round(self.wall_s, 1),
            "asterisk_cpu_ms_per_call": r(self.per_call_ms(self.asterisk_cpu_s)),
            "engine_cpu_ms_per_call": r(self.per_call_ms(self.engine_cpu_s)),
            "postgres_cpu_ms_per_call": r(self.per_call_ms(self.postgres_cpu_s)),
            "sipp_cpu_ms_per_call": r(self.per_call_ms(self.sipp_cpu_s)),
            "answer_ms_p50": r(pct(self.answer_ms, 50)), "answer_ms_p99": r(pct(self.answer_ms, 99)),
            "join_ms_p50": r(pct(self.join_ms, 50)), "join_ms_p99": r(pct(self.join_ms, 99)),
            "lag_ms_p99": r(pct(self.lag_ms, 99)), "lag_ms_max": r(max(self.lag_ms, default=None) if self.lag_ms
                                                                   else None),
            "load_avg": list(self.load_avg),
            "ari_events_per_call": (round(sum(v for k, v in self.ari_events.items() if k != "request") / self.calls, 1)
                                    if self.ari_events else None),
            "ari_events": self.ari_events,
            "engine_wakeups_per_call": (round(self.engine_wakeups / self.calls, 1)
                                        if self.calls and self.impl == "callctl" else None),
            "engine_counts_per_call": ({k: round(v / self.calls, 2) for k, v in self.engine_counts.items()}
                                       if self.calls else {}),
        }


def ari_event_types(console: str) -> dict[str, int]:
    """Event types in Asterisk's ``ari set debug APP on`` output (one JSON object per event sent), and
    the REST requests it received (``request``: over HTTP or as websocket messages)."""
    counts: dict[str, int] = {}
    for line in console.splitlines():
        stripped = line.strip()
        if "<--- ARI request received" in line or "<--- Received ARI message" in line:
            counts["request"] = counts.get("request", 0) + 1
            continue
        if stripped.startswith('"type": "') and line.startswith('  "type"'):
            kind = stripped.split('"')[3]
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def timings(calls: Mapping[str, CallTimes], hash_at: Mapping[str, float],
            callers: Iterable[str]) -> tuple[list[float], list[float], int]:
    """Answer and join latencies (ms) and the number of joined calls, over ``callers``."""
    answer, join, joined = [], [], 0
    for caller in callers:
        t = calls.get(caller)
        if t is None:
            continue
        if t.start is not None and t.answer is not None:
            answer.append((t.answer - t.start) * 1000)
        if t.join is not None:
            joined += 1
            if caller in hash_at:
                join.append((t.join - hash_at[caller]) * 1000)
    return answer, join, joined


def sustained_rate(steps: Sequence[Step], impl: str) -> float:
    """The highest rate of ``impl`` whose step, and every slower one, had zero failed calls."""
    best = 0.0
    for step in sorted((s for s in steps if s.impl == impl), key=lambda s: s.rate):
        if not step.ok:
            break
        best = step.rate
    return best


@dataclass(frozen=True)
class Ratios:
    cpu: float | None  # callctl CPU per call / Asterisk CPU per call, same calls (goal <= 0.10)
    rate: float | None  # callctl sustained rate / native sustained rate (goal >= 0.9)
    cpu_step_rate: float | None  # the callctl step the CPU ratio comes from


def ratios(steps: Sequence[Step]) -> Ratios:
    """CPU ratio at callctl's highest sustained step (the busiest load it handled cleanly; the lowest
    step when none was clean), and the sustained-rate ratio."""
    mine = sorted((s for s in steps if s.impl == "callctl"), key=lambda s: s.rate)
    clean = [s for s in mine if s.ok]
    basis = clean[-1] if clean else (mine[0] if mine else None)
    cpu = basis.engine_cpu_s / basis.asterisk_cpu_s if basis and basis.asterisk_cpu_s > 0 else None
    native = sustained_rate(steps, "native")
    rate = sustained_rate(steps, "callctl") / native if native > 0 else None
    return Ratios(cpu, rate, basis.rate if basis else None)


@dataclass(frozen=True)
class Goal:
    """One of issue 17's goals: what was measured, the limit, and whether it holds."""

    name: str
    measured: str
    limit: str
    ok: bool | None  # None: not measured in this run


def _p99(values: Sequence[float]) -> float | None:
    return pct(values, 99)


def saturation(steps: Sequence[Step]) -> list[str]:
    """Rates where the machine itself was saturated: the *native* dialplan's own tails grew (answer
    p99 beyond 3x + 5 ms, or `#`->join p99 beyond 1.3x, of its slowest step), or the load average
    passed the CPU count. Both implementations' tails then grow; said, not hidden."""
    import os

    native = sorted((s for s in steps if s.impl == "native" and s.answer_ms and s.join_ms), key=lambda s: s.rate)
    if not native:
        return []
    base_answer, base_join = _p99(native[0].answer_ms) or 0.0, _p99(native[0].join_ms) or 0.0
    notes = []
    cpus = os.cpu_count() or 1
    for s in native:
        answer, join = _p99(s.answer_ms) or 0.0, _p99(s.join_ms) or 0.0
        why = []
        if answer > base_answer * 3 + 5:
            why.append(f"native answer p99 {answer:.1f} ms (vs {base_answer:.1f} at {native[0].rate:g}/s)")
        if join > base_join * 1.3:
            why.append(f"native #->join p99 {join:.1f} ms (vs {base_join:.1f} at {native[0].rate:g}/s)")
        if s.load_avg[0] > cpus:
            why.append(f"load average {s.load_avg[0]:.1f} on {cpus} CPUs")
        if why:
            notes.append(f"{s.rate:g}/s: machine saturated: " + "; ".join(why))
    return notes


def goals(steps: Sequence[Step]) -> list[Goal]:
    """Issue 17's conference-flow goals over one run: CPU ratio; added latency p99 (callctl minus
    native, same rate) <= 10 ms for answer and `#`->join, and loop lag p99 <= 10 ms, at every rate the
    native dialplan sustained with zero failures."""
    out = []
    r = ratios(steps)
    out.append(Goal("engine CPU per call / Asterisk's", "n/a" if r.cpu is None else f"{r.cpu:.3f}"
                    + (f" at {r.cpu_step_rate:g}/s" if r.cpu_step_rate else ""), "<= 0.10",
                    None if r.cpu is None else r.cpu <= 0.10))
    native_ok = {s.rate: s for s in steps if s.impl == "native" and s.ok}
    sustained = sustained_rate(steps, "native")
    for key, label in (("answer_ms", "answer"), ("join_ms", "#->join")):
        worst: tuple[float, float] | None = None  # (added ms, rate)
        missing = []
        for s in steps:
            if s.impl != "callctl" or s.rate not in native_ok or s.rate > sustained:
                continue
            mine, theirs = _p99(getattr(s, key)), _p99(getattr(native_ok[s.rate], key))
            if mine is None or theirs is None or not s.ok:
                missing.append(s.rate)
                continue
            added = mine - theirs
            if worst is None or added > worst[0]:
                worst = (added, s.rate)
        rates_run = [s.rate for s in steps if s.impl == "callctl" and s.rate in native_ok and s.rate <= sustained]
        ran = {s.rate for s in steps if s.impl == "callctl"}
        missing += [rate for rate in native_ok if rate <= sustained and rate not in ran]
        measured = "n/a" if worst is None else f"{worst[0]:+.1f} ms (worst, at {worst[1]:g}/s)"
        if missing:
            measured += f"; callctl failed or did not run at {', '.join(f'{m:g}/s' for m in sorted(set(missing)))}"
        ok = None if not rates_run and not missing else (not missing and worst is not None and worst[0] <= 10)
        out.append(Goal(f"added {label} latency p99", measured, "<= 10 ms", ok))
    lags = [(_p99(s.lag_ms), s.rate) for s in steps if s.impl == "callctl" and s.rate in native_ok
            and s.rate <= sustained and s.lag_ms]
    worst_lag = max(((v, rate) for v, rate in lags if v is not None), default=None)
    out.append(Goal("event-loop lag p99", "n/a" if worst_lag is None else
                    f"{worst_lag[0]:g} ms (bucket bound, worst at {worst_lag[1]:g}/s)", "<= 10 ms",
                    None if worst_lag is None else worst_lag[0] <= 10))
    return out
