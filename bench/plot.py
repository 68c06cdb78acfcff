"""The latency plot of docs/benchmarks.md: latency against call rate for callctl and the native
dialplan, from the conference benchmark's results.json.

    .venv/bin/python -m bench.plot [.state/bench/conference.json] [--png docs/bench-latency.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scripts.devstack import REPO

PNG = REPO / "docs" / "bench-latency.png"
COLOURS = {"native": "tab:blue", "callctl": "tab:orange"}
LABELS = {"native": "native dialplan (Answer, Read, ConfBridge)", "callctl": "callctl (ARI)"}


def plot(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = results["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("answer", "channel start -> answered"), ("join", "'#' pressed -> in the room"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for impl in ("native", "callctl"):
            mine = sorted((s for s in steps if s["impl"] == impl and s[f"{key}_ms_p50"] is not None),
                          key=lambda s: s["rate"])
            rates = [s["rate"] for s in mine]
            ax.plot(rates, [s[f"{key}_ms_p50"] for s in mine], "o-", color=COLOURS[impl], label=f"{LABELS[impl]} p50")
            ax.plot(rates, [s[f"{key}_ms_p99"] for s in mine], "s--", color=COLOURS[impl], label=f"{impl} p99")
            for s in mine:
                if not s["ok"]:
                    ax.annotate("failed calls", (s["rate"], s[f"{key}_ms_p99"]), fontsize=7, color="red")
        ax.set_title(title)
        ax.set_xlabel("new calls per second")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    m = results["machine"]
    fig.suptitle(f"Conference access-code flow under SIPp load, {m['date'][:10]}, {m['cpu']} (shared machine)",
                 fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=REPO / ".state" / "bench" / "conference.json")
    parser.add_argument("--png", type=Path, default=PNG)
    args = parser.parse_args()
    plot(json.loads(args.results.read_text()), args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
