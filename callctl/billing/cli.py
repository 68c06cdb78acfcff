"""`callctl rates import | rate | credit add|show | bill | fairuse report | cdr retention|reconcile`."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import sys
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from callctl.billing.decks import DeckFileError, load_deck_file
from callctl.billing.minutes_cli import conference_csv_rows, print_conference_legs
from callctl.billing.plans import load_plans
from callctl.billing.rating import money_text
from callctl.billing.service import quote
from callctl.billing.statements import Statement, build_statement, fair_use_flags
from callctl.config import Settings
from callctl.errors import CallctlError, ConfigError
from callctl.progress import ProgressBar
from callctl.store import billing as store
from callctl.store import cel
from callctl.store.db import close_quietly, connect

RETENTION_MONTHS = 12


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a UTC offset (e.g. {text}+00:00): {text!r}")
    return value


def _month(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {text!r}") from None


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}") from None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.0001")):
        raise argparse.ArgumentTypeError(f"amount must be positive with at most 4 decimals: {text!r}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    rates = sub.add_parser("rates", parents=[common], help="rate decks")
    rsub = rates.add_subparsers(dest="rates_command", metavar="ACTION", required=True)
    imp = rsub.add_parser("import", parents=[common], help="import a rate deck CSV (all rows or none)")
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument("--deck", required=True, metavar="NAME")
    imp.add_argument("--effective", type=_instant, default=None, metavar="ISO8601",
                     help="instant the deck takes over (default: now)")
    imp.set_defaults(func=_rates_import)

    rate = sub.add_parser("rate", parents=[common], help="rate a call without placing it (JSON)")
    rate.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    rate.add_argument("--from", dest="from_e164", required=True, metavar="E164")
    rate.add_argument("--to", dest="to_e164", required=True, metavar="E164")
    rate.add_argument("--seconds", type=int, required=True, metavar="N")
    rate.add_argument("--at", type=_instant, default=None, metavar="ISO8601")
    rate.set_defaults(func=_rate)

    cred = sub.add_parser("credit", parents=[common], help="prepaid credit")
    csub = cred.add_subparsers(dest="credit_command", metavar="ACTION", required=True)
    add = csub.add_parser("add", parents=[common], help="top up an account's prepaid credit")
    add.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    add.add_argument("amount", type=_amount, metavar="AMOUNT")
    add.set_defaults(func=_credit_add)
    show = csub.add_parser("show", parents=[common], help="balance, amount held by calls, available")
    show.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    show.set_defaults(func=_credit_show)

    bill = sub.add_parser("bill", parents=[common], help="monthly statement of an account")
    bill.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    bill.add_argument("--month", type=_month, required=True, metavar="YYYY-MM")
    bill.add_argument("--csv", type=Path, default=None, metavar="FILE", help="also write the lines as CSV")
    bill.set_defaults(func=_bill)

    fair = sub.add_parser("fairuse", parents=[common], help="fair use of unlimited plans")
    fsub = fair.add_subparsers(dest="fairuse_command", metavar="ACTION", required=True)
    fsub.add_parser("report", parents=[common], help="unlimited accounts above the fair-use factor"
                    ).set_defaults(func=_fairuse)

    cdr = sub.add_parser("cdr", parents=[common], help="call detail records")
    cdsub = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    ret = cdsub.add_parser("retention", parents=[common],
                           help=f"drop CDR partitions older than {RETENTION_MONTHS} months")
    ret.add_argument("--dry-run", action="store_true", help="list what would be dropped")
    ret.set_defaults(func=_retention)
    rec = cdsub.add_parser("reconcile", parents=[common],
                           help="list the calls Asterisk ended without a CDR (JSON; exit 1 when any)")
    rec.add_argument("--since", required=True, type=_instant, metavar="ISO8601")
    rec.add_argument("--until", type=_instant, metavar="ISO8601",
                     help="default: a minute ago (a call that just ended may still be on its way)")
    rec.set_defaults(func=_reconcile)


async def _with_conn(settings: Settings, work: Any) -> Any:
    conn = await connect(settings.database_url)
    try:
        return await work(conn)
    finally:
        await close_quietly(conn)


def _rates_import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        # rows estimated from the size; the bar is drawn on a terminal only (scripts stay quiet)
        with ProgressBar(f"reading {args.file.name}", total=max(1, args.file.stat().st_size // 40)) as bar:
            rates = load_deck_file(args.file, progress=bar.update)
            bar.update(len(rates))
    except OSError as exc:
        raise CallctlError(f"{args.file}: cannot read the rate deck: {exc.strerror}") from None
    except DeckFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"callctl: rate deck refused, nothing imported: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    effective = args.effective or dt.datetime.now(dt.UTC)
    deck_id = asyncio.run(_with_conn(settings, lambda c: store.import_deck(
        c, args.deck, effective, str(args.file), rates)))
    print(json.dumps({"deck": args.deck, "deck_id": deck_id, "rows": len(rates),
                      "effective_at": effective.isoformat()}))
    return 0


async def _terms(conn: Any, account_id: uuid.UUID) -> store.AccountTerms:
    terms = await store.account_terms(conn, account_id)
    if terms is None:
        raise CallctlError(f"account {account_id} does not exist (see `callctl account list`)")
    return terms


def _rate(args: argparse.Namespace, settings: Settings) -> int:
    plans = load_plans(settings.plans_file)
    at = args.at or dt.datetime.now(dt.UTC)
    if args.seconds < 0:
        raise ConfigError("--seconds must be >= 0")

    async def work(conn: Any) -> dict[str, Any]:
        # The engine's own answer (service.quote, as authorize asks it): never a price it would refuse.
        q = await quote(conn, args.account, args.from_e164, args.to_e164, args.seconds, at, plans=plans)
        if q.rating is None or q.plan is None:
            raise CallctlError(f"account {args.account} does not exist (see `callctl account list`)")
        out = q.rating.to_json()
        out.update(account=str(args.account), plan=q.plan.name, seconds=args.seconds, at=at.isoformat())
        if q.refused is not None and "refused" not in out:  # the trial's end: the account, not the rate
            out["why"] = f"refused: {q.refused}; " + str(out["why"])
            out["refused"] = q.refused
        return out

    try:
        print(json.dumps(asyncio.run(_with_conn(settings, work)), indent=2))
    except ValueError as exc:  # a number that is not E.164
        raise ConfigError(str(exc)) from None
    return 0


def _credit_add(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: Any) -> store.Credit:
        terms = await _terms(conn, args.account)
        return await store.add_credit(conn, args.account, terms.currency, args.amount, "callctl credit add")

    _print_credit(asyncio.run(_with_conn(settings, work)))
    return 0


def _credit_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: Any) -> store.Credit:
        terms = await _terms(conn, args.account)
        return (await store.credit(conn, args.account)) or store.Credit(args.account, terms.currency,
                                                                         Decimal("0.0000"), Decimal("0.0000"))

    _print_credit(asyncio.run(_with_conn(settings, work)))
    return 0


def _print_credit(c: store.Credit) -> None:
    print(json.dumps({"account": str(c.account_id), "currency": c.currency, "balance": money_text(c.balance),
                      "reserved": money_text(c.reserved), "available": money_text(c.available)}))


def _next_month(start: dt.datetime) -> dt.datetime:
    return (start + dt.timedelta(days=32)).replace(day=1)


def _bill(args: argparse.Namespace, settings: Settings) -> int:
    plans = load_plans(settings.plans_file)
    start: dt.datetime = args.month
    end = _next_month(start)

    async def work(conn: Any) -> Statement:
        terms = await _terms(conn, args.account)
        legs = await store.outbound_legs(conn, args.account, start, end)
        decks = await store.load_decks(conn, start, end)
        return build_statement(start.strftime("%Y-%m"), terms.currency, legs, decks, plans.get(terms.plan),
                               plans.vat_rate(terms.country))

    st = asyncio.run(_with_conn(settings, work))
    print(f"Statement {st.month} for account {args.account} ({st.currency}, amounts excl. VAT)")
    for line in st.lines:
        tag = "included" if line.included else "billed"
        print(f"  {line.destination:<30} zone {line.zone:<4} {tag:<8} {line.calls:>6} call(s) "
              f"{line.seconds:>8} s {line.amount:>12}")
    print(f"  {'Total excl. VAT':<72}{st.total_excl_vat:>12}")
    print(f"  {f'VAT {st.vat_rate * 100:.1f} %':<72}{st.vat:>12}")
    print(f"  {'Total':<72}{st.total:>12}")
    pool = print_conference_legs(settings, args.account, start, end)
    if st.attention:
        # The statement stands without these calls; each is named so a person can settle it (exit 1).
        print(f"  Needs attention: {len(st.attention)} call(s) not on the lines above")
        for item in st.attention:
            print(f"    {item.leg_id} {item.started_at:%Y-%m-%d %H:%M:%S}Z {item.destination or '-'}: {item.reason}")
        print(f"callctl: bill: {len(st.attention)} call(s) of account {args.account} need attention "
              f"(listed in the statement); exit status 1", file=sys.stderr)
    if args.csv:
        with args.csv.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["destination", "zone", "included", "calls", "seconds", "billed_seconds", "amount",
                        "currency", "cdr_leg_ids"])
            for line in st.lines:
                w.writerow([line.destination, line.zone, line.included, line.calls, line.seconds,
                            line.billed_seconds, line.amount, st.currency, " ".join(map(str, line.leg_ids))])
            w.writerow(["total excl. VAT", "", "", "", "", "", st.total_excl_vat, st.currency, ""])
            w.writerow([f"VAT {st.vat_rate}", "", "", "", "", "", st.vat, st.currency, ""])
            w.writerow(["total", "", "", "", "", "", st.total, st.currency, ""])
            for item in st.attention:
                w.writerow([f"needs attention: {item.reason}", "", "", "", "", "", "", st.currency, item.leg_id])
            w.writerows(conference_csv_rows(pool))
    return 1 if st.attention else 0


def _fairuse(args: argparse.Namespace, settings: Settings) -> int:
    plan = load_plans(settings.plans_file).get("unlimited")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=round(30.44 * plan.fair_use_months))
    usage = asyncio.run(_with_conn(settings, lambda c: store.unlimited_monthly_usage(
        c, since, plan.fair_use_months)))
    flagged = fair_use_flags(usage, plan.fair_use_factor)
    print(json.dumps({"since": since.isoformat(), "accounts": len(usage), "factor": str(plan.fair_use_factor),
                      "flagged": [{"account": a, "monthly_avg_s": str(usage[a].quantize(Decimal(1))),
                                   "times_average": str(r.quantize(Decimal("0.01")))}
                                  for a, r in sorted(flagged.items(), key=lambda x: -x[1])]}, indent=2))
    return 0


def retention_cutoff(now: dt.datetime) -> dt.datetime:
    """Records started before this instant are older than the retention period."""
    month = now.year * 12 + now.month - 1 - RETENTION_MONTHS
    return now.replace(year=month // 12, month=month % 12 + 1, day=min(now.day, 28))


def _retention(args: argparse.Namespace, settings: Settings) -> int:
    cutoff = retention_cutoff(dt.datetime.now(dt.UTC))

    cel_cutoff = dt.datetime.now(dt.UTC) - cel.CEL_RETENTION

    async def work(conn: Any) -> tuple[list[str], int, int]:
        # A partition goes only when its whole month ended before the cutoff.
        old = [name for name, first in await store.cdr_month_partitions(conn) if _next_month(first) <= cutoff]
        events = await cel.purge(conn, cel_cutoff, dry_run=args.dry_run)
        if args.dry_run:
            return old, 0, events
        return old, await store.drop_cdr_partitions(conn, old, cutoff), events

    old, purged, events = asyncio.run(_with_conn(settings, work))
    verb = "would drop" if args.dry_run else "dropped"
    for name in old:
        print(f"{verb} {name}")
    print(f"cdr retention ({RETENTION_MONTHS} months, cutoff {cutoff.isoformat()}): {verb} {len(old)} "
          f"partition(s)" + ("" if args.dry_run else f", {purged} old row(s) deleted from cdr_default")
          + f"; Asterisk channel events ({cel.CEL_RETENTION.days} days): {verb} {events}")
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    until = args.until or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    if until <= args.since:
        raise ConfigError(f"cdr reconcile: --until {until.isoformat()} is not after --since {args.since.isoformat()}")
    channels = asyncio.run(_with_conn(settings, lambda conn: cel.ended_channels(conn, args.since, until)))
    missing = [c.to_json() for c in channels if not c.has_cdr]
    print(json.dumps({"since": args.since.isoformat(), "until": until.isoformat(),
                      "channels_ended": len(channels), "with_cdr": len(channels) - len(missing),
                      "without_cdr": missing,
                      "note": "from Asterisk's channel events (cel); a CDR still in callctl's local spool "
                              "(PostgreSQL was down) is listed until the spool drains"}, indent=2))
    return 1 if missing else 0
