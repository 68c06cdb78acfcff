"""In-process metrics rendered in the Prometheus text format (no global registry: the app owns one)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

HistogramView = tuple[Sequence[float], Sequence[int], float]


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._gauges: dict[str, Callable[[], float]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._histograms: dict[str, Callable[[], HistogramView]] = {}

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = ("counter", help_text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0.0) + amount

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._help[name] = ("gauge", help_text)
        self._gauges[name] = read

    def histogram(self, name: str, help_text: str, read: Callable[[], HistogramView]) -> None:
        """A histogram read when scraped: (bucket upper bounds, count per bucket with +Inf last, sum)."""
        self._help[name] = ("histogram", help_text)
        self._histograms[name] = read

    def value(self, name: str, **labels: str) -> float:
        if name in self._gauges:
            return float(self._gauges[name]())
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text) in sorted(self._help.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "histogram":
                bounds, counts, total = self._histograms[name]()
                running = 0
                for bound, n in zip((*bounds, float("inf")), counts, strict=True):
                    running += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'{name}_bucket{{le="{le}"}} {running}')
                lines.append(f"{name}_sum {total}")
                lines.append(f"{name}_count {running}")
                continue
            if kind == "gauge":
                lines.append(f"{name} {float(self._gauges[name]())}")
                continue
            series = self._counters.get(name) or {(): 0.0}
            for key, value in sorted(series.items()):
                label = ",".join(f'{k}="{v}"' for k, v in key)
                lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
        return "\n".join(lines) + "\n"
