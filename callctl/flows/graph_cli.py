"""``callctl dialplan graph``: draw the dialplan's flows with Graphviz (SVG, PNG or DOT)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callctl.config import Settings
from callctl.flows import graph
from callctl.flows.model import Dialplan

FORMATS = ("svg", "png", "dot")


def _since(text: str) -> dt.datetime:
    """"7d", "24h", "30m" ago, or an ISO 8601 time (naive means UTC)."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[:-1].isdigit() and text[-1:] in units:
        return dt.datetime.now(dt.UTC) - dt.timedelta(**{units[text[-1]]: int(text[:-1])})
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


Loader = Callable[[Path | None, Settings], Dialplan]


def graph_cmd(args: argparse.Namespace, settings: Settings, *, load: Loader) -> int:
    fmt = args.format or (args.output.suffix.lstrip(".").lower() if args.output else "dot")
    if fmt not in FORMATS:
        print(f"callctl: error: cannot draw '{fmt}': choose --format from {', '.join(FORMATS)} "
              f"(or name the output .svg, .png or .dot)", file=sys.stderr)
        return 2
    since = None
    if args.calls:
        try:
            since = _since(args.calls)
        except ValueError:
            print(f"callctl: error: --calls '{args.calls}' is neither a duration (7d, 24h, 30m) nor an ISO 8601 time",
                  file=sys.stderr)
            return 2
    plan = load(args.dir, settings)
    counts = None
    if since is not None:
        # The stored traces come through the CLI's root (callctl/cli.py): flows never imports the store.
        counts = graph.edge_counts(args.trace_paths(settings, since))
    try:
        dot = graph.build(plan, flow=args.flow, counts=counts)
    except KeyError as exc:
        print(f"callctl: error: {exc.args[0]}", file=sys.stderr)
        return 2
    data = dot.source.encode() if fmt == "dot" else dot.pipe(format=fmt)
    if args.output is None:
        sys.stdout.buffer.write(data)
    else:
        args.output.write_bytes(data)
        print(f"{args.output}: {len(plan.flows) if args.flow is None else 1} flows drawn ({fmt})",
              file=sys.stderr)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, *, load: Loader) -> None:
    p = sub.add_parser("graph", parents=[common], help="draw the flows as a graph (SVG, PNG or DOT)",
                       description="Steps as nodes; keys, outcomes, timeouts and gotos as labelled edges; "
                                   "numbers pointing at their flows. Needs Graphviz's dot for SVG/PNG.")
    p.add_argument("dir", nargs="?", type=Path, default=None,
                   help="dialplan directory (default: the dialplan_dir setting)")
    p.add_argument("--flow", metavar="NAME", help="only this flow (and the numbers routed to it)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="output file (default: DOT on stdout)")
    p.add_argument("--format", choices=FORMATS, help="default: from the output file's extension")
    p.add_argument("--calls", metavar="SINCE",
                   help="label each edge with how many calls took it since SINCE (7d, 24h, or ISO 8601), "
                        "from the traces stored with the CDRs")
    p.set_defaults(func=functools.partial(graph_cmd, load=load))
