"""`callctl fraud show|permissions|limits|release|blocks|unblock`: fraud settings and actions, each change
audited with who made it (--by, default the login name)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from callctl.config import Settings
from callctl.fraud import FraudError
from callctl.fraud.rules import Limits, Permissions
from callctl.fraud.settings import fraud_policy

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _who() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _csv(text: str) -> list[str]:
    return [p for p in (t.strip() for t in text.split(",")) if p]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    fraud = sub.add_parser("fraud", parents=[common], help="toll-fraud permissions, limits, suspensions, SIP blocks")
    fsub = fraud.add_subparsers(dest="fraud_command", metavar="ACTION", required=True)

    show = fsub.add_parser("show", parents=[common], help="an account's permissions, limits, usage, suspension, "
                                                           "latest refusals and audit trail (JSON)")
    show.add_argument("account", type=uuid.UUID, metavar="ACCOUNT_ID")
    show.set_defaults(func=_show)

    perms = fsub.add_parser("permissions", parents=[common], help="change which destinations an account (or one "
                                                                  "of its users) may call; audited")
    perms.add_argument("account", type=uuid.UUID, metavar="ACCOUNT_ID")
    perms.add_argument("--user", type=uuid.UUID, metavar="USER_ID", help="this user's own permissions "
                                                                         "(start from the account's)")
    countries = perms.add_mutually_exclusive_group()
    countries.add_argument("--countries", metavar="CC,CC", help="only these countries may be called")
    countries.add_argument("--all-countries", action="store_true", help="every country (the default)")
    perms.add_argument("--deny-countries", metavar="CC,CC", help="these countries may not be called ('' for none)")
    perms.add_argument("--zones", metavar="ZONE,ZONE", help="allowed zones among domestic, europe, world")
    for name in ("premium", "satellite", "high-risk"):
        perms.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"allow {name} destinations (off for new accounts)")
    perms.add_argument("--by", default=None, metavar="NAME", help="who makes the change (default: login name)")
    perms.set_defaults(func=_permissions)

    limits = fsub.add_parser("limits", parents=[common], help="change an account's spend velocity limits and "
                                                              "alert address; audited")
    limits.add_argument("account", type=uuid.UUID, metavar="ACCOUNT_ID")
    limits.add_argument("--hour", metavar="AMOUNT", help="money per hour (account currency)")
    limits.add_argument("--day", metavar="AMOUNT", help="money per 24 hours")
    limits.add_argument("--calls-per-minute", metavar="N")
    limits.add_argument("--international-calls", metavar="N", help="international calls at once")
    limits.add_argument("--warn-percent", metavar="P", help="warning at this percentage of a limit")
    limits.add_argument("--contact", metavar="EMAIL", help="the account's address for fraud alerts")
    limits.add_argument("--by", default=None, metavar="NAME")
    limits.set_defaults(func=_limits)

    release = fsub.add_parser("release", parents=[common], help="lift an account's outbound-call suspension "
                                                                "(exit 1 if it was not suspended)")
    release.add_argument("account", type=uuid.UUID, metavar="ACCOUNT_ID")
    release.add_argument("--note", metavar="TEXT", help="why (kept in the audit trail)")
    release.add_argument("--by", default=None, metavar="NAME")
    release.set_defaults(func=_release)

    enc = fsub.add_parser("encryption", parents=[common], help="a SIP user's media encryption: SRTP (SDES) "
                                                               "offered (default), required (with TLS), or off")
    enc.add_argument("user", type=uuid.UUID, metavar="USER_ID")
    mode = enc.add_mutually_exclusive_group(required=True)
    mode.add_argument("--require", dest="mode", action="store_const", const="require",
                      help="SRTP mandatory: plain RTP refused; calls to the phone over TLS")
    mode.add_argument("--offer", dest="mode", action="store_const", const="offer",
                      help="SRTP when the phone supports it (the default)")
    mode.add_argument("--off", dest="mode", action="store_const", const="off", help="plain RTP only")
    enc.add_argument("--by", default=None, metavar="NAME")
    enc.set_defaults(func=_encryption)

    blocks = fsub.add_parser("blocks", parents=[common], help="SIP source addresses blocked now (JSON)")
    blocks.set_defaults(func=_blocks)
    unblock = fsub.add_parser("unblock", parents=[common], help="lift the block of a SIP source address "
                                                                "(exit 1 if it was not blocked)")
    unblock.add_argument("address", metavar="IP")
    unblock.add_argument("--by", default=None, metavar="NAME")
    unblock.set_defaults(func=_unblock)


def _db(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    from callctl.store.db import run_with_pool

    return run_with_pool(settings.database_url, work)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import fraud as store

    defaults = fraud_policy(settings).defaults

    async def work(pool: Any) -> dict[str, Any]:
        facts = await store.account_facts(pool, args.account)
        if facts is None:
            raise FraudError(f"no account {args.account} (see: callctl account create)")
        perms, scope = await store.permissions(pool, args.account)
        return {"account": str(args.account), "currency": facts.currency,
                "permissions": {**perms.to_json(), "scope": scope},
                "limits": Limits.from_json(facts.limits, defaults).to_json(), "limits_set": facts.limits,
                "contact_email": facts.contact_email, **await store.overview(pool, args.account)}

    _print(_db(settings, work))
    return 0


def _permissions(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import fraud as store

    changes: dict[str, Any] = {}
    if args.countries is not None:
        changes["countries"] = _csv(args.countries)
        if not changes["countries"]:
            raise FraudError("--countries: give at least one country (or --all-countries)")
    if args.all_countries:
        changes["countries"] = None
    if args.deny_countries is not None:
        changes["deny_countries"] = _csv(args.deny_countries)
    if args.zones is not None:
        changes["zones"] = _csv(args.zones)
    for key in ("premium", "satellite", "high_risk"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if not changes:
        raise FraudError("nothing to change: give --countries, --deny-countries, --zones, --premium, ... "
                         "(see: callctl fraud permissions --help)")

    def change(before: Permissions) -> Permissions:
        return before.changed(**changes)

    before, after = _db(settings, lambda pool: store.set_permissions(pool, args.account, args.user,
                                                                       args.by or _who(), change))
    _print({"account": str(args.account), "user": str(args.user) if args.user else None,
            "before": before.to_json(), "after": after.to_json()})
    return 0


def _limits(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import fraud as store

    changes = {"hour": args.hour, "day": args.day, "calls_per_minute": args.calls_per_minute,
               "international_calls": args.international_calls, "warn_percent": args.warn_percent}
    if args.contact is not None and not _EMAIL.match(args.contact):
        raise FraudError(f"--contact '{args.contact}' is not an e-mail address")
    if all(v is None for v in changes.values()) and args.contact is None:
        raise FraudError("nothing to change: give --hour, --day, --calls-per-minute, --international-calls, "
                         "--warn-percent or --contact")
    defaults = fraud_policy(settings).defaults
    before, after = _db(settings, lambda pool: store.set_limits(pool, args.account, args.by or _who(), defaults,
                                                                  changes, args.contact))
    _print({"account": str(args.account), "before": before.to_json(), "after": after.to_json(),
            "contact_email": args.contact})
    return 0


def _release(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import fraud as store

    released = _db(settings, lambda pool: store.release(pool, args.account, args.by or _who(), args.note))
    if released is None:
        print(f"callctl: error: account {args.account} is not suspended (nothing to release)", file=sys.stderr)
        return 1
    _print({"account": str(args.account), "released": released})
    return 0


def _blocks(args: argparse.Namespace, settings: Settings) -> int:
    """The nodes' blocks (PostgreSQL, each engine's Asterisk ACL) and, with kamailio_ctl, Kamailio's bans."""
    from callctl.store import fraud as store

    listed = [{**b.to_json(), "where": "nodes"} for b in _db(settings, store.active_blocks)]
    if settings.kamailio_ctl:
        from callctl.fraud.kamailio import edge_bans

        listed += [b.to_json() for b in asyncio.run(edge_bans(settings.kamailio_ctl))]
    _print(listed)
    return 0


def _unblock(args: argparse.Namespace, settings: Settings) -> int:
    """Lift an address everywhere it is blocked: the nodes' block and Kamailio's ban, audited together."""
    from callctl.store import fraud as store

    edge: list[dict[str, Any]] = []
    if settings.kamailio_ctl:
        from callctl.fraud.kamailio import lift_edge_ban

        ban = asyncio.run(lift_edge_ban(settings.kamailio_ctl, args.address))
        edge = [ban.to_json()] if ban is not None else []
    lifted = _db(settings, lambda pool: store.lift_block(pool, args.address, args.by or _who(), lifted_at_edge=edge))
    if not lifted and not edge:
        print(f"callctl: error: {args.address} is not blocked (nothing to lift)", file=sys.stderr)
        return 1
    _print({"address": args.address, "lifted": lifted, "lifted_at_kamailio": bool(edge),
            "note": "the running daemons remove it from Asterisk's ACL within seconds; Kamailio's ban is gone now"})
    return 0


def _encryption(args: argparse.Namespace, settings: Settings) -> int:
    from callctl.store import fraud as store

    _print(_db(settings, lambda pool: store.set_encryption(pool, args.user, args.mode, args.by or _who())))
    return 0
