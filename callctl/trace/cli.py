"""``callctl call show CALL_ID`` (one call in one view) and ``callctl calls [--watch]`` (calls in progress)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

from callctl.config import Settings


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    call = sub.add_parser("call", parents=[common], help="one call: its trace, CDRs, price, recordings")
    csub = call.add_subparsers(dest="call_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", parents=[common], help="the steps a call took, the CDRs of its legs, the "
                                                         "price's explanation, recordings and conference events")
    show.add_argument("call_id", type=uuid.UUID, metavar="CALL_ID", help="the call_id of its CDRs (and log lines)")
    show.add_argument("--json", action="store_true", help="one JSON object on stdout, for scripts")
    show.set_defaults(func=_show)

    calls = sub.add_parser("calls", parents=[common], help="calls in progress in the running daemon",
                           description="Caller (masked), number called, flow, current step and duration of "
                                       "every call the daemon handles now (its http_listen address).")
    calls.add_argument("--watch", action="store_true", help="refresh every second, like top (Ctrl-C to stop)")
    calls.add_argument("--interval", type=float, default=1.0, metavar="S", help="--watch refresh period")
    calls.add_argument("--json", action="store_true", help="one JSON object on stdout, for scripts")
    calls.set_defaults(func=_calls)


# -- call show -------------------------------------------------------------------------------------


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store.db import run_with_pool
    from callctl.store.traces import call_view

    view = run_with_pool(settings.database_url, lambda pool: call_view(pool, args.call_id))
    if not view["cdrs"]:
        print(f"callctl: error: no CDR with call_id {args.call_id} (a call in progress has none yet: "
              f"see callctl calls; CDRs are kept 12 months)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view, default=_json_default, sort_keys=True))
        return 0
    print("\n".join(render_view(view)))
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _ts(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC" if value else "-"


def price_explanation(cdr: dict[str, Any]) -> str:
    """How the stored price of one leg follows from its stored rating fields."""
    if cdr.get("included"):
        return f"included in the plan (deck {cdr.get('rating_deck')}, prefix {cdr.get('rating_prefix')}): 0"
    if cdr.get("cost") is None:
        return ("not rated at call end: the statement rates it from the deck "
                f"(callctl rate --to {cdr['to_number']} --seconds {cdr['billed_s']})")
    rate, cur = cdr.get("rate_per_minute"), cdr.get("currency") or ""
    return (f"{cdr['billed_s']} s billed by the second at {rate} {cur}/min (deck {cdr.get('rating_deck')}, "
            f"prefix {cdr.get('rating_prefix')}) = {cdr['cost']} {cur}")


def render_view(view: dict[str, Any]) -> list[str]:
    cdrs: list[dict[str, Any]] = view["cdrs"]
    first = cdrs[0]
    span = (max(c["ended_at"] for c in cdrs) - first["started_at"]).total_seconds()
    out = [f"call {view['call_id']}: {first['direction']} {first['from_number']} -> {first['to_number']}, "
           f"{_ts(first['started_at'])}, {span:.1f} s, {first['disposition']}"
           + (f", flow {first['flow']} (dialplan {first['dialplan_version']})" if first.get("flow") else "")]
    trace = next((c["extra"].get("trace") for c in cdrs if isinstance(c.get("extra"), dict)
                  and c["extra"].get("trace")), None)
    out.append("")
    if trace:
        out.append("steps:")
        for n, t in enumerate(trace, 1):
            keys = f"  keys {t['keys']}" if t.get("keys") else ""
            prompts = f"  played {', '.join(t['prompts'])}" if t.get("prompts") else ""
            out.append(f"  {n:>3}  [{t.get('flow')}] {t.get('step')} ({t.get('kind')}) -> {t.get('result')}"
                       f"  {t.get('ms', 0)} ms{keys}{prompts}")
    else:
        out.append("steps: none recorded (the call ran no flow, or was placed before traces were kept)")
    out.append("")
    out.append("legs:")
    for c in cdrs:
        tags = ", ".join(f"{k} {c[k]}" for k in ("account_id", "user_id", "conference_id", "person", "role")
                         if c.get(k))
        out.append(f"  {c['leg_id']}  {c['direction']}  {c['from_number']} -> {c['to_number']}  "
                   f"{c['disposition']}  billed {c['billed_s']} s  cause {c['hangup_cause']} ({c['hangup_reason']})")
        out.append(f"      started {_ts(c['started_at'])}  answered {_ts(c['answered_at'])}  "
                   f"ended {_ts(c['ended_at'])}" + (f"  [{tags}]" if tags else ""))
        out.append(f"      price: {price_explanation(c)}")
    out.append("")
    recs = view["recordings"]
    out.append("recordings:" + ("" if recs else " none"))
    for r in recs:
        out.append(f"  {r['id']}  {r['source']}  {r['state']}  {_ts(r['started_at'])} - {_ts(r['ended_at'])}"
                   + ("  legal hold" if r.get("legal_hold") else ""))
    events = view["conference_events"]
    out.append("conference events:" + ("" if events else " none"))
    for e in events:
        out.append(f"  {_ts(e['at'])}  {e['what']}  {e['role']}" + (f"  ({e['reason']})" if e.get("reason") else ""))
    return out


# -- calls -----------------------------------------------------------------------------------------


def _fetch_calls(settings: Settings) -> dict[str, Any]:
    host, port = settings.http_host_port
    with urllib.request.urlopen(f"http://{host}:{port}/calls", timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def render_calls(answer: dict[str, Any]) -> list[str]:
    calls = answer.get("calls", [])
    out = [f"{len(calls)} call(s) in progress"
           + (f" (dialplan {answer['dialplan_version']})" if answer.get("dialplan_version") else "")]
    if calls:
        out.append(f"{'CALLER':<16} {'CALLED':<16} {'FLOW':<16} {'STEP':<18} {'STATE':<9} {'DURATION':>8}  CALL_ID")
        for c in sorted(calls, key=lambda c: -float(c.get("duration_s", 0))):
            out.append(f"{c.get('caller', ''):<16} {c.get('called', ''):<16} {c.get('flow') or '-':<16} "
                       f"{c.get('step') or '-':<18} {c.get('state', ''):<9} {_duration(c.get('duration_s', 0)):>8}  "
                       f"{c.get('call_id', '')}")
    return out


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _calls(args: argparse.Namespace, settings: Settings) -> int:
    host, port = settings.http_host_port
    while True:
        try:
            answer = _fetch_calls(settings)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"callctl: error: no daemon answering on {host}:{port} (http_listen): {reason}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(answer, sort_keys=True))
            return 0
        lines = render_calls(answer)
        if not args.watch:
            print("\n".join(lines))
            return 0
        # like top: clear the screen, draw, wait; on a pipe, one block per refresh
        header = f"callctl calls -- {dt.datetime.now(dt.UTC):%H:%M:%S} UTC -- every {args.interval:g} s, Ctrl-C to stop"
        screen = "\n".join([header, "", *lines])
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
        else:
            sys.stdout.write(screen + "\n\n")
        sys.stdout.flush()
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
