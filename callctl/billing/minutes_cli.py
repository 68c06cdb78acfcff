"""`callctl minutes add|show`: an organizer account's free-minutes pool (issue 10), and the statement
section `callctl bill` prints (and writes into its CSV) for the conference legs the pool paid for."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from callctl.billing.currency import currency_code, price_in
from callctl.billing.minutes import (
    PoolStatement,
    Purchase,
    as_minutes,
    minutes_to_seconds,
    paid_by_currency,
    pool_statement,
)
from callctl.config import Settings
from callctl.errors import CallctlError, ConfigError
from callctl.store import billing as billing_store
from callctl.store import minutes as store
from callctl.store.db import run_with_pool


def _minutes(text: str) -> int:
    try:
        return minutes_to_seconds(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"MINUTES must be a whole number of minutes above 0, not '{text}'") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    mins = sub.add_parser("minutes", parents=[common], help="free-minutes pools for organizer-paid dial-in")
    msub = mins.add_subparsers(dest="minutes_command", metavar="ACTION", required=True)
    add = msub.add_parser("add", parents=[common], help="add bought minutes to an account's pool")
    add.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    add.add_argument("seconds", type=_minutes, metavar="MINUTES")
    add.add_argument("--note", default="", help="kept on the pool's ledger (e.g. the order number)")
    add.add_argument("--price", metavar="AMOUNT", help="what these minutes cost, excl. VAT (e.g. 120.00); "
                                                        "needs --currency")
    add.add_argument("--currency", metavar="CUR", help="ISO 4217 currency of --price (e.g. EUR)")
    add.set_defaults(func=_add)
    show = msub.add_parser("show", parents=[common], help="balance, seconds held by live legs, what used it (JSON)")
    show.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    show.set_defaults(func=_show)


async def _account_exists(db: Any, account_id: uuid.UUID) -> None:
    if await billing_store.account_terms(db, account_id) is None:
        raise ConfigError(f"account {account_id} does not exist (see `callctl account list`)")


def _price(args: argparse.Namespace) -> tuple[Decimal | None, str | None]:
    """--price and --currency, validated before anything is written (both or neither)."""
    if args.price is None and args.currency is None:
        return None, None
    if args.price is None or args.currency is None:
        raise ConfigError("minutes add: --price and --currency go together (e.g. --price 120.00 --currency EUR)")
    try:
        currency = currency_code(args.currency)
        return price_in(args.price, currency), currency
    except ValueError as exc:
        raise ConfigError(f"minutes add: {exc}") from None


def _add(args: argparse.Namespace, settings: Settings) -> int:
    price, currency = _price(args)

    async def work(db: Any) -> store.Pool:
        await _account_exists(db, args.account)
        return await store.add(db, args.account, args.seconds, args.note or "callctl minutes add", price=price,
                               currency=currency)

    p = run_with_pool(settings.database_url, work)
    out = _pool_json(p)
    if price is not None:
        out["price"], out["currency"] = str(price), currency
    print(json.dumps(out))
    return 0


def _purchases(moves: Sequence[dict[str, Any]]) -> list[Purchase]:
    return [Purchase(m["at"], int(m["seconds"]), m["price"], m["currency"], m["note"])
            for m in moves if m["kind"] == "purchase"]


def _pool_json(p: store.Pool) -> dict[str, Any]:
    return {"account": str(p.account_id), "balance_s": p.balance_s, "balance_minutes": str(as_minutes(p.balance_s)),
            "held_s": p.reserved_s, "available_s": p.available_s}


def _show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> dict[str, Any]:
        await _account_exists(db, args.account)
        p = await store.pool(db, args.account) or store.Pool(args.account, 0, 0)
        out = _pool_json(p)
        out["used_by"] = [{"conference_id": str(u.conference_id), "subject": u.subject, "legs": u.legs,
                           "used_s": u.used_s, "used_minutes": str(as_minutes(u.used_s)), "live_legs": u.open_legs,
                           "held_s": u.held_s} for u in await store.usage(db, args.account)]
        moves = await store.ledger(db, args.account)
        out["movements"] = [{"at": m["at"].isoformat(timespec="milliseconds"), "kind": m["kind"],
                             "seconds": int(m["seconds"]), "conference_id": str(m["conference_id"] or "") or None,
                             "note": m["note"], "price": None if m["price"] is None else str(m["price"]),
                             "currency": m["currency"]} for m in moves]
        # What all purchases cost, per currency (those recorded without a price are not counted).
        out["paid"] = {cur: str(amount) for cur, amount in paid_by_currency(_purchases(moves)).items()}
        return out

    print(json.dumps(run_with_pool(settings.database_url, work), indent=2))
    return 0


# -- the statement section ---------------------------------------------------------------------------
async def conference_statement(db: Any, account_id: uuid.UUID, start: dt.datetime, end: dt.datetime) -> PoolStatement:
    legs = await store.paid_legs(db, account_id, start, end)
    moves = await store.ledger(db, account_id, start, end)
    p = await store.pool(db, account_id)
    return pool_statement(account_id, start.strftime("%Y-%m"), legs, _purchases(moves), p.balance_s if p else 0)


def print_conference_legs(settings: Settings, account_id: uuid.UUID, start: dt.datetime,
                          end: dt.datetime) -> PoolStatement:
    """The organizer-paid conference legs of the month, by conference, after the statement's lines;
    returns the section (written into the CSV too, so both show the same figures)."""
    try:
        st = run_with_pool(settings.database_url,
                           lambda db: conference_statement(db, account_id, start, end))
    except ValueError as exc:
        raise CallctlError(f"statement for {account_id} {start:%Y-%m}: {exc}") from None
    if not st.lines and not st.purchases:
        return st
    print(f"Conference legs paid from the free-minutes pool of account {account_id} (minutes, not billed)")
    for line in st.lines:
        print(f"  {line.subject[:30]:<30} {line.conference_id!s:<36} {line.legs:>4} leg(s) "
              f"{line.seconds:>8} s {line.minutes:>9} min")
    print(f"  {'Pool drawn':<72}{as_minutes(st.used_s):>9} min ({st.used_s} s)")
    for p in st.purchases:
        cost = f", {p.price} {p.currency} excl. VAT" if p.price is not None else ", no price recorded"
        print(f"  {f'Minutes bought {p.at:%Y-%m-%d}' + (f' ({p.note})' if p.note else ''):<72.72}"
              f"{as_minutes(p.seconds):>9} min ({p.seconds} s{cost})")
    paid = "".join(f", {amount} {cur}" for cur, amount in st.paid.items())
    print(f"  {'Pool bought this month':<72}{as_minutes(st.purchased_s):>9} min ({st.purchased_s} s{paid})")
    print(f"  {'Pool balance now':<72}{as_minutes(st.balance_s):>9} min ({st.balance_s} s)")
    return st


CSV_HEADER = ("section", "what", "conference_id", "legs", "seconds", "minutes", "price", "currency", "leg_ids")


def conference_csv_rows(st: PoolStatement) -> list[list[str]]:
    """The conference section of `callctl bill --csv`: the same figures as the printed section, under
    its own header row (the columns differ from the call lines')."""
    if not st.lines and not st.purchases:
        return []
    rows = [list(CSV_HEADER)]
    for line in st.lines:
        rows.append(["conference", line.subject, str(line.conference_id), str(line.legs), str(line.seconds),
                     str(line.minutes), "", "", " ".join(map(str, line.leg_ids))])
    rows.append(["pool drawn", "", "", "", str(st.used_s), str(as_minutes(st.used_s)), "", "", ""])
    for p in st.purchases:
        rows.append(["minutes bought", f"{p.at.isoformat(timespec='milliseconds')} {p.note or ''}".strip(), "", "",
                     str(p.seconds), str(as_minutes(p.seconds)), "" if p.price is None else str(p.price),
                     p.currency or "", ""])
    rows.append(["pool bought this month", "", "", "", str(st.purchased_s), str(as_minutes(st.purchased_s)), "",
                 "", ""])
    for cur, amount in st.paid.items():
        rows.append(["paid this month", "", "", "", "", "", str(amount), cur, ""])
    rows.append(["pool balance now", "", "", "", str(st.balance_s), str(as_minutes(st.balance_s)), "", "", ""])
    return rows
