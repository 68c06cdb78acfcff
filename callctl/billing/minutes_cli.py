"""`callctl minutes add|show`: an organizer account's free-minutes pool (issue 10), and the statement
section `callctl bill` prints for the conference legs the pool paid for."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from typing import Any

from callctl.billing.minutes import PoolStatement, as_minutes, minutes_to_seconds, pool_statement
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
    add.set_defaults(func=_add)
    show = msub.add_parser("show", parents=[common], help="balance, seconds held by live legs, what used it (JSON)")
    show.add_argument("--account", type=uuid.UUID, required=True, metavar="ID")
    show.set_defaults(func=_show)


async def _account_exists(db: Any, account_id: uuid.UUID) -> None:
    if await billing_store.account_terms(db, account_id) is None:
        raise ConfigError(f"account {account_id} does not exist (see `callctl account list`)")


def _add(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: Any) -> store.Pool:
        await _account_exists(db, args.account)
        return await store.add(db, args.account, args.seconds, args.note or "callctl minutes add")

    p = run_with_pool(settings.database_url, work)
    print(json.dumps(_pool_json(p)))
    return 0


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
        out["movements"] = [{"at": m["at"].isoformat(timespec="milliseconds"), "kind": m["kind"],
                             "seconds": int(m["seconds"]), "conference_id": str(m["conference_id"] or "") or None,
                             "note": m["note"]} for m in await store.ledger(db, args.account)]
        return out

    print(json.dumps(run_with_pool(settings.database_url, work), indent=2))
    return 0


# -- the statement section ---------------------------------------------------------------------------
async def conference_statement(db: Any, account_id: uuid.UUID, start: dt.datetime, end: dt.datetime) -> PoolStatement:
    legs = await store.paid_legs(db, account_id, start, end)
    moves = await store.ledger(db, account_id, start, end)
    p = await store.pool(db, account_id)
    return pool_statement(account_id, start.strftime("%Y-%m"), legs,
                          sum(int(m["seconds"]) for m in moves if m["kind"] == "purchase"), p.balance_s if p else 0)


def print_conference_legs(settings: Settings, account_id: uuid.UUID, start: dt.datetime, end: dt.datetime) -> None:
    """The organizer-paid conference legs of the month, by conference, after the statement's lines."""
    try:
        st = run_with_pool(settings.database_url,
                           lambda db: conference_statement(db, account_id, start, end))
    except ValueError as exc:
        raise CallctlError(f"statement for {account_id} {start:%Y-%m}: {exc}") from None
    if not st.lines and not st.purchased_s:
        return
    print(f"Conference legs paid from the free-minutes pool of account {account_id} (minutes, not billed)")
    for line in st.lines:
        print(f"  {line.subject[:30]:<30} {line.conference_id!s:<36} {line.legs:>4} leg(s) "
              f"{line.seconds:>8} s {line.minutes:>9} min")
    print(f"  {'Pool drawn':<72}{as_minutes(st.used_s):>9} min ({st.used_s} s)")
    print(f"  {'Pool bought this month':<72}{as_minutes(st.purchased_s):>9} min ({st.purchased_s} s)")
    print(f"  {'Pool balance now':<72}{as_minutes(st.balance_s):>9} min ({st.balance_s} s)")
