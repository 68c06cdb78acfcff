"""`callctl emergency|dialer|gate|originate|optout|compliance ...`: gating from the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from callctl import clitools
from callctl.config import Settings
from callctl.gating import GatingError
from callctl.gating.compliance import PENALTY_EUR, SHORT_CALL_S, penalty_eur


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from callctl.clitools import account_actions

    em = sub.add_parser("emergency", parents=[common], help="an account's emergency calling status")
    esub = em.add_subparsers(dest="emergency_command", metavar="ACTION", required=True)
    # The spelling `callctl account emergency ID ...` and `callctl emergency set ID ...`: one parser shape,
    # one handler.
    for parent, name in ((esub, "set"), (account_actions(sub, common), "emergency")):
        es = parent.add_parser(name, parents=[common], help="enable emergency calls (with a proved location) "
                                                            "or disable them")
        es.add_argument("id", type=uuid.UUID, metavar="ACCOUNT_ID")
        mode = es.add_mutually_exclusive_group(required=True)
        mode.add_argument("--enable", action="store_true")
        mode.add_argument("--disable", action="store_true")
        es.add_argument("--location", metavar="TEXT", help="the line's geographic location (address)")
        es.add_argument("--verified", action="store_true", help="the location has been proved (dated now)")
        es.set_defaults(func=_emergency_set)
    eshow = esub.add_parser("show", parents=[common], help="the account's emergency status")
    eshow.add_argument("id", type=uuid.UUID, metavar="ACCOUNT_ID")
    eshow.set_defaults(func=_emergency_show)

    dialer = sub.add_parser("dialer", parents=[common], help="an account's outbound dialer profile")
    dsub = dialer.add_subparsers(dest="dialer_command", metavar="ACTION", required=True)
    ds = dsub.add_parser("set", parents=[common], help="flag an account as automated / its sector")
    ds.add_argument("id", type=uuid.UUID, metavar="ACCOUNT_ID")
    ds.add_argument("--automated", action=argparse.BooleanOptionalAction, default=True)
    ds.add_argument("--sector", metavar="NAME")
    ds.set_defaults(func=_dialer_set)

    gate = sub.add_parser("gate", parents=[common], help="print the gate's decision for a call, as JSON, "
                                                         "without placing it")
    gate.add_argument("--account", required=True, type=uuid.UUID, metavar="ID")
    gate.add_argument("--from", dest="from_number", required=True, metavar="E164")
    gate.add_argument("--to", required=True, metavar="NUMBER", help="as dialled (national, E.164 or short)")
    gate.add_argument("--at", metavar="ISO8601", help="decision time (default now; naive means UTC)")
    gate.add_argument("--automated", action="store_true", help="apply the dialer rules (default: the "
                                                                "account's dialer profile)")
    gate.set_defaults(func=_gate)

    orig = sub.add_parser("originate", parents=[common],
                          help="have the running daemon place an automated call that runs a flow when answered, "
                               "after the dialer rules (prints the decision as JSON; exit 1 if refused)")
    orig.add_argument("--account", required=True, type=uuid.UUID, metavar="ID")
    orig.add_argument("--from", dest="from_number", required=True, metavar="E164", help="the caller ID presented")
    orig.add_argument("--to", required=True, metavar="E164", help="the callee (national form: the account's country)")
    orig.add_argument("--flow", required=True, metavar="NAME", help="the dialplan flow the answered call runs")
    orig.set_defaults(func=_originate)

    optout = sub.add_parser("optout", parents=[common], help="the opposition list (BLOCTEL)")
    osub = optout.add_subparsers(dest="optout_command", metavar="ACTION", required=True)
    imp = osub.add_parser("import", parents=[common],
                          help="replace the list (one number a line); the switch is atomic")
    imp.add_argument("file", type=Path)
    imp.add_argument("--customers", type=Path, metavar="FILE",
                     help="existing customers of --account (one number a line): called even if listed")
    imp.add_argument("--consent", type=Path, metavar="FILE", help="numbers with recorded consent for --account")
    imp.add_argument("--account", type=uuid.UUID, metavar="ID")
    imp.add_argument("--country", default="FR", metavar="CC", help="country of national numbers (default FR)")
    imp.set_defaults(func=_optout_import)

    comp = sub.add_parser("compliance", parents=[common], help="dialer compliance")
    csub = comp.add_subparsers(dest="compliance_command", metavar="ACTION", required=True)
    rep = csub.add_parser("report", parents=[common], help="a month of decisions, penalties and short calls")
    rep.add_argument("--account", required=True, type=uuid.UUID, metavar="ID")
    rep.add_argument("--month", required=True, metavar="YYYY-MM")
    rep.add_argument("--penalty-eur", type=Decimal, default=PENALTY_EUR, metavar="EUR",
                     help=f"per illegitimate attempt (default {PENALTY_EUR})")
    rep.set_defaults(func=_report)


def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[dict[str, Any]]]) -> int:
    from callctl.store.db import run_with_pool

    print(json.dumps(run_with_pool(settings.database_url, work), indent=2))
    return 0


def _status_json(account_id: uuid.UUID, status: Any) -> dict[str, Any]:
    verified = status.verified_at.isoformat() if status.verified_at else None
    return {"account_id": str(account_id), "enabled": status.enabled, "location": status.location,
            "verified_at": verified}


def _emergency_set(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.dialplans import load_countries
    from callctl.store import gating as store

    if args.enable and not (args.location or "").strip():
        raise GatingError("emergency set --enable needs --location TEXT (the line's address)")

    countries = load_countries(settings.dialplan_dir)

    async def work(pool: Any) -> dict[str, Any]:
        if await store.account_country(pool, args.id) is None:
            raise GatingError(f"no account {args.id} (see: callctl account create)")
        status = await store.set_emergency(pool, args.id, enabled=bool(args.enable), countries=countries,
                                           location=(args.location or "").strip() or None, verified=args.verified)
        return _status_json(args.id, status)

    return _with_pool(settings, work)


def _emergency_show(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.gating.emergency import NOT_ACTIVATED
    from callctl.store import gating as store

    async def work(pool: Any) -> dict[str, Any]:
        if await store.account_country(pool, args.id) is None:
            raise GatingError(f"no account {args.id} (see: callctl account create)")
        return _status_json(args.id, await store.get_emergency(pool, args.id) or NOT_ACTIVATED)

    return _with_pool(settings, work)


def _dialer_set(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import gating as store

    async def work(pool: Any) -> dict[str, Any]:
        if await store.account_country(pool, args.id) is None:
            raise GatingError(f"no account {args.id} (see: callctl account create)")
        d = await store.set_dialer(pool, args.id, automated=args.automated, sector=args.sector)
        return {"account_id": str(args.id), "automated": d.automated, "sector": d.sector}

    return _with_pool(settings, work)


def _parse_at(raw: str | None) -> dt.datetime:
    if raw is None:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise GatingError(f"--at '{raw}' is not an ISO 8601 time (e.g. 2025-03-04T10:30:00+01:00)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _gate(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.dialplans import load_countries
    from callctl.gating.service import decide
    from callctl.store import gating as store

    at = _parse_at(args.at)
    countries = load_countries(settings.dialplan_dir)

    async def work(pool: Any) -> dict[str, Any]:
        country = await store.account_country(pool, args.account)
        if country is None:
            raise GatingError(f"no account {args.account} (see: callctl account create)")
        dialer = await store.get_dialer(pool, args.account)
        automated = args.automated or (dialer is not None and dialer.automated)
        decision = await decide(pool, countries, args.account, args.from_number, args.to, at,
                                account_country=country, automated=automated)
        if decision.allowed and not decision.emergency:  # issue 20: the fraud screen (emergency never)
            refusal = await clitools.screen_outbound(pool, settings, args.account, country, decision.number_e164)
            if refusal is not None:
                rule, reason = refusal
                return {**decision.as_json(), "decision": "deny", "rule": rule, "reason": reason,
                        "route": None, "automated": automated, "at": at.isoformat()}
        return {**decision.as_json(), "automated": automated, "at": at.isoformat()}

    return _with_pool(settings, work)


def _originate(args: argparse.Namespace, settings: Settings) -> int:
    """Asks the daemon over its loopback HTTP (http_listen): the daemon owns the ARI connection."""
    host, port = settings.http_host_port
    body = json.dumps({"account": str(args.account), "from": args.from_number, "to": args.to,
                       "flow": args.flow}).encode()
    request = urllib.request.Request(f"http://{host}:{port}/originate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}")
        raise GatingError(f"originate refused by the daemon at {host}:{port}: "
                          f"{answer.get('error', f'HTTP {exc.code}')}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GatingError(f"no callctl daemon answering at {host}:{port} (http_listen): {reason}: "
                          "start it with `callctl run`") from None
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("originated") else 1


def _optout_import(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.gating import optout

    if (args.customers or args.consent) and args.account is None:
        raise GatingError("--customers and --consent belong to an account: add --account ID")

    async def work(pool: Any) -> dict[str, Any]:
        out = await optout.import_list(pool, args.file, country=args.country)
        for kind, path in (("customer", args.customers), ("consent", args.consent)):
            if path is not None:
                out[f"{kind}_exceptions"] = await optout.import_exceptions(pool, args.account, path, kind,
                                                                           country=args.country)
        return out

    return _with_pool(settings, work)


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    try:
        lo = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise GatingError(f"--month '{month}' must look like 2025-03") from None
    hi = (lo + dt.timedelta(days=32)).replace(day=1)
    return lo, hi


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import gating as store

    lo, hi = month_bounds(args.month)

    async def work(pool: Any) -> dict[str, Any]:
        figures = await store.compliance_figures(pool, args.account, lo, hi, SHORT_CALL_S)
        calls = figures["outbound_calls"]
        ratio = (Decimal(figures["short_calls"]) / calls).quantize(Decimal("0.0001")) if calls else Decimal(0)
        return {"account_id": str(args.account), "month": args.month, **figures,
                "penalty_per_attempt_eur": str(args.penalty_eur),
                "penalty_eur": str(penalty_eur(figures["illegitimate"], args.penalty_eur)),
                "short_call_ratio": str(ratio), "short_call_s": SHORT_CALL_S}

    return _with_pool(settings, work)
