"""``callctl dialplan check|simulate|reload|render-prompts``: the operators' tools.

Each handler is ``handler(args, settings) -> int``; an invalid dialplan raises DialplanError,
which the top-level CLI prints as one ``FILE:LINE:COL: message`` line per problem (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from callctl.config import Settings
from callctl.flows import graph_cli, registry
from callctl.flows.loader import load_dialplan
from callctl.flows.model import DIAL_STATUSES, Dialplan
from callctl.flows.pjsip import configured_endpoints
from callctl.flows.prompts import render_prompts
from callctl.flows.reader import suggest
from callctl.flows.simulate import DTMF_KEYS, simulate

# Modules that register step types: load_dialplan imports them (kept here for older importers).
STEP_MODULES = registry.STEP_MODULES
# The store side of `dialplan switch` and of simulate's switch states, loaded by name so that the
# flow language never imports the database driver.
SWITCH_STORE_CLI = "callctl.store.switch_cli"


def _load(directory: Path | None, settings: Settings) -> Dialplan:
    return load_dialplan(directory if directory is not None else settings.dialplan_dir,
                         endpoints=configured_endpoints(settings.pjsip_conf))


def check(args: argparse.Namespace, settings: Settings) -> int:
    plan = _load(args.dir, settings)
    print(plan.summary())
    if not settings.pjsip_conf.is_file():
        print(f"trunks not checked: no {settings.pjsip_conf} (set pjsip_conf to Asterisk's pjsip.conf)")
    return 0


def simulate_cmd(args: argparse.Namespace, settings: Settings) -> int:
    keys: list[str] = list(args.dtmf or [])
    directory: Path | None = args.dir
    # "--dtmf 2 1234# dialplan/" : the last word is the directory, not keys.
    if keys and directory is None and any(ch.upper() not in DTMF_KEYS for ch in keys[-1]):
        directory = Path(keys.pop())
    for word in keys:
        if any(ch.upper() not in DTMF_KEYS for ch in word):
            print(f"callctl: error: --dtmf '{word}' is not phone keys (0-9 * # A-D)", file=sys.stderr)
            return 2
    at: dt.datetime | None = None
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError:
            print(f"callctl: error: --at '{args.at}' is not an ISO 8601 time (e.g. 2026-03-02T10:30)",
                  file=sys.stderr)
            return 2
    overrides: dict[str, bool] = {}
    for word in args.switch or []:
        name, _, state = word.partition("=")
        if state not in ("on", "off"):
            print(f"callctl: error: --switch '{word}' must be NAME=on or NAME=off", file=sys.stderr)
            return 2
        overrides[name] = state == "on"
    plan = _load(directory, settings)
    for name in overrides:
        if name not in plan.switches:
            print(f"callctl: error: --switch: unknown switch '{name}'{suggest(name, plan.switches)}", file=sys.stderr)
            return 2
    # The database is asked only if the call reaches a `when: {switch: ...}` step.
    reader = importlib.import_module(SWITCH_STORE_CLI).StoreSwitches(settings.database_url)
    result = asyncio.run(simulate(plan, args.to, caller=args.caller, dtmf=keys, at=at, dial_status=args.dial,
                                  switches=overrides, switch_reader=reader))
    for line in result.lines:
        print(line)
    return 0 if result.result is None or result.result.outcome != "error" else 1


def reload(args: argparse.Namespace, settings: Settings) -> int:
    plan = _load(args.dir, settings)  # refused here, with every problem, before the daemon refuses it
    pid_file = settings.pid_file
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        print(f"callctl: error: no daemon running (no pid file at {pid_file})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"callctl: error: cannot read the pid file {pid_file}: {exc}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"callctl: error: no daemon running (pid {pid} from {pid_file} is gone)", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"callctl: error: not allowed to signal pid {pid} (run as the callctl user or root)",
              file=sys.stderr)
        return 1
    print(f"reload sent to pid {pid}: {plan.summary()} (see the dialplan_reloaded log line)")
    return 0


def switch(args: argparse.Namespace, settings: Settings) -> int:
    plan = _load(args.dir, settings)
    if args.name is None:
        return int(importlib.import_module(SWITCH_STORE_CLI).list_cmd(settings, plan))
    if args.name not in plan.switches:
        print(f"callctl: error: unknown switch '{args.name}'{suggest(args.name, plan.switches)}: declare it in the "
              "dialplan's switches: section first", file=sys.stderr)
        return 2
    return int(importlib.import_module(SWITCH_STORE_CLI).switch_cmd(args, settings, plan))


def render(args: argparse.Namespace, settings: Settings) -> int:
    plan = _load(args.dir, settings)
    rendered, unchanged = asyncio.run(render_prompts(plan, args.out, force=args.force,
                                                     objection_key=settings.recording_objection_key))
    print(f"prompts: {rendered} rendered, {unchanged} unchanged, in {args.out / 'callctl'}")
    return 0


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``callctl dialplan ...`` to the top-level parser's subcommands."""
    top = subparsers.add_parser("dialplan", parents=[common], help="check, simulate, reload the dialplan",
                                description="Operator tools for the YAML dialplan (docs/dialplan.md).")
    sub = top.add_subparsers(dest="dialplan_command", metavar="SUBCOMMAND", required=True)
    dir_help = "dialplan directory (default: the dialplan_dir setting)"

    p = sub.add_parser("check", parents=[common], help="check a dialplan; every problem as FILE:LINE:COL")
    p.add_argument("dir", nargs="?", type=Path, default=None, help=dir_help)
    p.set_defaults(func=check)

    p = sub.add_parser("simulate", parents=[common], help="walk a call through its flow without a phone",
                       description="Route a called number and run its flow with a fake call that presses "
                                   "the given keys; prints each step taken and why.")
    p.add_argument("--to", required=True, metavar="E164", help="the number called, e.g. +33900000002")
    p.add_argument("--from", dest="caller", default="+33100000000", metavar="E164", help="the caller's number")
    p.add_argument("--dtmf", nargs="+", metavar="KEYS", help="keys the caller presses, e.g. 2 1234#")
    p.add_argument("--at", metavar="ISO8601", help="the time of the call (local time of the number's country "
                                                   "unless an offset is given), for 'when' steps")
    p.add_argument("--dial", default="answered", choices=DIAL_STATUSES, help="how dial steps end")
    p.add_argument("--switch", action="append", metavar="NAME=on|off",
                   help="a day/night switch's state (default: as recorded in the database, else its default)")
    p.add_argument("dir", nargs="?", type=Path, default=None, help=dir_help)
    p.set_defaults(func=simulate_cmd)

    p = sub.add_parser("reload", parents=[common], help="check, then make the running daemon load the dialplan")
    p.add_argument("dir", nargs="?", type=Path, default=None, help="directory to check first " + dir_help[9:])
    p.set_defaults(func=reload)

    p = sub.add_parser("switch", parents=[common], help="turn a day/night switch on or off, or show it",
                       description="Flip a switch declared in the dialplan's switches: section, for new calls "
                                   "at once (no reload); who and when are logged. Without on/off: show it; "
                                   "without a name: every switch.")
    p.add_argument("name", metavar="NAME", nargs="?", help="a switch (none: every switch and its state)")
    p.add_argument("state", nargs="?", choices=("on", "off"))
    p.add_argument("--by", metavar="WHO", help="who flips it (default: the login, and the sudo user)")
    p.add_argument("--reason", metavar="TEXT", help="why (kept in the log)")
    p.add_argument("--dir", type=Path, default=None, help=dir_help)
    p.set_defaults(func=switch)

    p = sub.add_parser("render-prompts", parents=[common], help="render text prompts to 8 kHz wav files")
    p.add_argument("dir", nargs="?", type=Path, default=None, help=dir_help)
    p.add_argument("--out", type=Path, required=True, metavar="SOUNDS_DIR",
                   help="Asterisk's sounds directory (files go to SOUNDS_DIR/callctl/<lang>/)")
    p.add_argument("--force", action="store_true", help="render even unchanged prompts")
    p.set_defaults(func=render)
    graph_cli.register(sub, common, load=_load)
