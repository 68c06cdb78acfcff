"""`callctl account|user|number ...`: business-line accounts, SIP users and numbers from the command line."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from callctl.clitools import account_actions, account_phones_changed, json_with_pool
from callctl.config import Settings
from callctl.lines.accounts import LineError, account_options, require_e164, require_name
from callctl.numbers import to_e164
from callctl.store import lines as store


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    asub = account_actions(sub, common)
    create = asub.add_parser("create", parents=[common], help="create an account; prints JSON with its id")
    create.add_argument("--name", required=True)
    create.add_argument("--country", required=True, metavar="CC", help="ISO 3166 alpha-2, e.g. FR")
    create.add_argument("--currency", metavar="CUR", help="EUR, CHF or GBP (default: by country)")
    create.add_argument("--plan", metavar="NAME", help="rating plan (default payg)")
    create.add_argument("--extra-channels", type=int, default=0, metavar="N",
                        help="simultaneous calls per user beyond the first (default 0)")
    create.add_argument("--recording", action="store_true", help="record every call of the account")
    create.set_defaults(func=_account_create)
    show = asub.add_parser("show", parents=[common], help="an account, its users and their numbers")
    show.add_argument("id", type=uuid.UUID)
    show.set_defaults(func=_account_show)

    user = sub.add_parser("user", parents=[common], help="SIP users (one phone line each)")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser("add", parents=[common],
                          help="add a user; prints JSON with its SIP user name and generated password")
    add.add_argument("--account", required=True, type=uuid.UUID, metavar="ID")
    add.add_argument("--name", required=True)
    add.add_argument("--number", action="append", default=[], metavar="E164",
                     help="a number (DID) ringing this user; repeatable; national form read in the account's country")
    add.add_argument("--forward", metavar="E164", help="forward unanswered calls to this number")
    add.set_defaults(func=_user_add)
    remove = usub.add_parser("remove", parents=[common],
                             help="remove a user: its phone can no longer register or call, its numbers are freed")
    remove.add_argument("id", type=uuid.UUID)
    remove.set_defaults(func=_user_remove)

    number = sub.add_parser("number", parents=[common], help="numbers (DIDs)")
    nsub = number.add_subparsers(dest="number_command", metavar="ACTION", required=True)
    assign = nsub.add_parser("assign", parents=[common], help="make a number ring a user")
    assign.add_argument("number", metavar="E164")
    assign.add_argument("--user", required=True, type=uuid.UUID, metavar="ID")
    assign.set_defaults(func=_number_assign)


def _number(raw: str, country: str, what: str) -> str:
    return require_e164(to_e164(raw, country), what)


def _account_json(acc: store.Account) -> dict[str, Any]:
    return {"id": str(acc.id), "name": acc.name, "country": acc.country.strip(), "currency": acc.currency,
            "plan": acc.plan, "extra_channels": acc.extra_channels, "recording": acc.recording,
            "created_at": acc.created_at.isoformat()}


def _user_json(user: store.SipUser) -> dict[str, Any]:
    return {"id": str(user.id), "account_id": str(user.account_id), "name": user.name,
            "sip_username": user.sip_username, "numbers": list(user.numbers), "forward_to": user.forward_to}


def _account_create(args: argparse.Namespace, settings: Settings) -> int:
    name = require_name(args.name, "account")
    options = account_options(country=args.country, currency=args.currency, plan=args.plan,
                              extra_channels=args.extra_channels, recording=args.recording)

    async def work(pool: Any) -> dict[str, Any]:
        return _account_json(await store.create_account(pool, name, options))

    return json_with_pool(settings, work)


def _account_show(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> dict[str, Any]:
        acc = await store.get_account(pool, args.id)
        if acc is None:
            raise LineError(f"no account {args.id}")
        out = _account_json(acc)
        out["users"] = [_user_json(u) for u in await store.users_of_account(pool, acc.id)]
        return out

    return json_with_pool(settings, work)


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    name = require_name(args.name, "user")

    async def work(pool: Any) -> dict[str, Any]:
        acc = await store.get_account(pool, args.account)
        if acc is None:
            raise LineError(f"no account {args.account}: create it with `callctl account create`")
        country = acc.country.strip()
        numbers = list(dict.fromkeys(_number(n, country, "--number") for n in args.number))
        forward = _number(args.forward, country, "--forward") if args.forward else None
        user, password = await store.add_user(pool, acc.id, name, numbers=numbers, forward_to=forward)
        await account_phones_changed(pool, settings, acc.id)
        out = _user_json(user)
        out["sip_password"] = password
        return out

    return json_with_pool(settings, work)


def _user_remove(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> dict[str, Any]:
        user = await store.remove_user(pool, args.id)
        if user is None:
            raise LineError(f"no user {args.id} to remove (unknown or already removed)")
        return {"id": str(user.id), "sip_username": user.sip_username, "removed": True,
                "numbers_freed": list(user.numbers)}

    return json_with_pool(settings, work)


def _number_assign(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pool: Any) -> dict[str, Any]:
        user = await store.get_user(pool, args.user)
        if user is None or user.removed_at is not None:
            raise LineError(f"no user {args.user} (unknown or removed)")
        acc = await store.get_account(pool, user.account_id)
        assert acc is not None  # foreign key
        number = _number(args.number, acc.country.strip(), "number")
        user = await store.assign_number(pool, number, user.id)
        await account_phones_changed(pool, settings, acc.id)
        return {"number": number, "user_id": str(user.id), "numbers": list(user.numbers)}

    return json_with_pool(settings, work)
