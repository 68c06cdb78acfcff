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
            "ari_events_per_call": round(sum(self.ari_events.values()) / self.calls, 1) if self.ari_events else None,
            "ari_events": self.ari_events,
            "engine_wakeups_per_call": (round(self.engine_wakeups / self.calls, 1)
                                        if self.calls and self.impl == "callctl" else None),
        }


def ari_event_types(console: str) -> dict[str, int]:
    """Event types in Asterisk's ``ari set debug APP on`` output (one JSON object per event sent)."""
    counts: dict[str, int] = {}
    for line in console.splitlines():
        stripped = line.strip()
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
