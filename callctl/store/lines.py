"""Accounts, SIP users, their numbers (DIDs) and the Asterisk realtime PJSIP rows (SQL).

A user's ps_endpoints/ps_auths/ps_aors rows are written and deleted in the same transaction as the
user, so Asterisk (realtime, no cache) sees a user exactly while callctl does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from callctl.lines.accounts import AccountOptions, LineError, new_sip_password, sip_username_for
from callctl.store.db import connection as _connection
from callctl.store.db import translated

_translated = translated("lines store")

# PJSIP settings of every business-line phone: the codec order of the brief (OPUS, Speex, G.711 A/mu),
# RFC 4733 DTMF, media anchored in Asterisk (bridging, recording), NAT-friendly (phones behind routers).
ENDPOINT_CONTEXT = "from-users"  # extensions.conf: Stasis(callctl,line-outbound)
ENDPOINT_ALLOW = "opus,speex,alaw,ulaw"


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    name: str
    country: str
    currency: str
    plan: str
    extra_channels: int
    recording: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class SipUser:
    id: uuid.UUID
    account_id: uuid.UUID
    name: str
    sip_username: str
    forward_to: str | None
    numbers: tuple[str, ...]
    created_at: dt.datetime
    removed_at: dt.datetime | None


@dataclass(frozen=True)
class LineUser:
    """What call routing needs about a live user and its account, in one read."""

    user_id: uuid.UUID
    account_id: uuid.UUID
    sip_username: str
    forward_to: str | None
    country: str
    currency: str
    plan: str
    extra_channels: int
    recording: bool
    numbers: tuple[str, ...]
    suspended: bool = False  # the account is suspended: no calls but emergency ones

    @property
    def channel_limit(self) -> int:
        return 1 + self.extra_channels


def _account(row: Any) -> Account:
    return Account(**{k: row[k] for k in Account.__dataclass_fields__})


def _user(row: Any) -> SipUser:
    data = dict(row)
    data["numbers"] = tuple(data["numbers"] or ())
    return SipUser(**{k: data[k] for k in SipUser.__dataclass_fields__})


_USER_SELECT = """
    SELECT u.id, u.account_id, u.name, u.sip_username, u.forward_to, u.created_at, u.removed_at,
           coalesce((SELECT array_agg(d.number ORDER BY d.number) FROM did d WHERE d.user_id = u.id), '{}')
               AS numbers
      FROM sip_user u"""

_LINE_SELECT = """
    SELECT u.id AS user_id, u.account_id, u.sip_username, u.forward_to, a.country, a.currency, a.plan,
           a.extra_channels, a.recording,
           coalesce((SELECT array_agg(d.number ORDER BY d.number) FROM did d WHERE d.user_id = u.id), '{}')
               AS numbers,
           EXISTS (SELECT 1 FROM account_suspension s WHERE s.account_id = a.id AND s.resumed_at IS NULL)
               AS suspended
      FROM sip_user u JOIN account a ON a.id = u.account_id"""


def _line(row: Any) -> LineUser:
    data = dict(row)
    data["country"] = data["country"].strip()
    data["numbers"] = tuple(data["numbers"])
    return LineUser(**data)


@_translated
async def create_account(db: Any, name: str, options: AccountOptions) -> Account:
    row = await db.fetchrow(
        """INSERT INTO account (id, name, country, currency, plan, extra_channels, recording)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        uuid.uuid4(), name, options.country, options.currency, options.plan, options.extra_channels,
        options.recording)
    return _account(row)


@_translated
async def get_account(db: Any, account_id: uuid.UUID) -> Account | None:
    row = await db.fetchrow("SELECT * FROM account WHERE id = $1", account_id)
    return None if row is None else _account(row)


@_translated
async def users_of_account(db: Any, account_id: uuid.UUID) -> list[SipUser]:
    rows = await db.fetch(f"{_USER_SELECT} WHERE u.account_id = $1 AND u.removed_at IS NULL ORDER BY u.created_at",
                          account_id)
    return [_user(r) for r in rows]


@_translated
async def get_user(db: Any, user_id: uuid.UUID) -> SipUser | None:
    row = await db.fetchrow(f"{_USER_SELECT} WHERE u.id = $1", user_id)
    return None if row is None else _user(row)


async def _claim_numbers(conn: Any, user_id: uuid.UUID, numbers: list[str]) -> None:
    for number in numbers:
        owner = await conn.fetchval(
            "INSERT INTO did (number, user_id) VALUES ($1, $2) ON CONFLICT (number) DO NOTHING RETURNING user_id",
            number, user_id)
        if owner is None:
            held = await conn.fetchval("SELECT user_id FROM did WHERE number = $1", number)
            if held != user_id:
                raise LineError(f"number {number} is already assigned to user {held}: "
                                f"`callctl user remove {held}` first, or choose another number")


@_translated
async def add_user(db: Any, account_id: uuid.UUID, name: str, *, numbers: Sequence[str] = (),
                   forward_to: str | None = None) -> tuple[SipUser, str]:
    """Create a user, its numbers and its PJSIP endpoint/auth/AOR; returns it and its SIP password."""
    user_id = uuid.uuid4()
    username = sip_username_for(user_id)
    password = new_sip_password()
    async with _connection(db) as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM account WHERE id = $1 FOR SHARE", account_id) is None:
            raise LineError(f"no account {account_id}: create it with `callctl account create`")
        await conn.execute(
            "INSERT INTO sip_user (id, account_id, name, sip_username, forward_to) VALUES ($1, $2, $3, $4, $5)",
            user_id, account_id, name, username, forward_to)
        await _claim_numbers(conn, user_id, list(numbers))
        await conn.execute(
            """INSERT INTO ps_endpoints (id, transport, aors, auth, context, disallow, allow, dtmf_mode,
                   direct_media, rtp_symmetric, force_rport, rewrite_contact, trust_id_inbound, callerid)
               VALUES ($1, NULL, $1, $1, $2, 'all', $3, 'rfc4733', 'no', 'yes', 'yes', 'yes', 'no', $4)""",
            username, ENDPOINT_CONTEXT, ENDPOINT_ALLOW, _callerid(name, sorted(numbers)))
        await conn.execute(
            "INSERT INTO ps_auths (id, auth_type, username, password) VALUES ($1, 'userpass', $1, $2)",
            username, password)
        await conn.execute(
            "INSERT INTO ps_aors (id, max_contacts, remove_existing) VALUES ($1, 1, 'yes')", username)
        row = await conn.fetchrow(f"{_USER_SELECT} WHERE u.id = $1", user_id)
    return _user(row), password


def _callerid(name: str, numbers: list[str]) -> str:
    # Quotes and angle brackets would break the callerid syntax Asterisk parses.
    clean = "".join(ch for ch in name if ch not in '"<>\\')[:40]
    return f'"{clean}" <{numbers[0]}>' if numbers else f'"{clean}"'


@_translated
async def remove_user(db: Any, user_id: uuid.UUID) -> SipUser | None:
    """Mark the user removed, free its numbers and delete its PJSIP rows and registrations.

    Returns the user as it was, or None if it is unknown or already removed. From the commit on,
    Asterisk no longer finds the endpoint: the phone can neither register nor call.
    """
    async with _connection(db) as conn, conn.transaction():
        row = await conn.fetchrow(f"{_USER_SELECT} WHERE u.id = $1 AND u.removed_at IS NULL FOR UPDATE OF u",
                                  user_id)
        if row is None:
            return None
        username = row["sip_username"]
        await conn.execute("UPDATE sip_user SET removed_at = now() WHERE id = $1", user_id)
        await conn.execute("DELETE FROM did WHERE user_id = $1", user_id)
        await conn.execute("DELETE FROM ps_endpoints WHERE id = $1", username)
        await conn.execute("DELETE FROM ps_auths WHERE id = $1", username)
        await conn.execute("DELETE FROM ps_aors WHERE id = $1", username)
        # Contact ids are "<aor>;@<hash>"; older rows may lack the endpoint column.
        await conn.execute("DELETE FROM ps_contacts WHERE endpoint = $1 OR id LIKE $2",
                           username, username + ";@%")
    return _user(row)


@_translated
async def assign_number(db: Any, number: str, user_id: uuid.UUID) -> SipUser:
    """Give ``number`` (E.164) to a live user; refused if another user holds it."""
    async with _connection(db) as conn, conn.transaction():
        live = await conn.fetchval("SELECT 1 FROM sip_user WHERE id = $1 AND removed_at IS NULL FOR SHARE", user_id)
        if live is None:
            raise LineError(f"no user {user_id} (unknown or removed)")
        await _claim_numbers(conn, user_id, [number])
        row = await conn.fetchrow(f"{_USER_SELECT} WHERE u.id = $1", user_id)
    return _user(row)


@_translated
async def user_for_did(db: Any, e164: str) -> LineUser | None:
    """The live user a call to ``e164`` should ring, with its account's options."""
    row = await db.fetchrow(f"{_LINE_SELECT} JOIN did n ON n.user_id = u.id WHERE n.number = $1 "
                            "AND u.removed_at IS NULL", e164)
    return None if row is None else _line(row)


@_translated
async def user_for_endpoint(db: Any, sip_username: str) -> LineUser | None:
    """The live user behind PJSIP endpoint ``sip_username`` (a call from a phone)."""
    row = await db.fetchrow(f"{_LINE_SELECT} WHERE u.sip_username = $1 AND u.removed_at IS NULL", sip_username)
    return None if row is None else _line(row)


# -- channel slots: a user's calls in progress over all nodes (migrations/0020_global_rules.sql) -----------


@_translated
async def take_slot(db: Any, user_id: uuid.UUID, node: str, channel_id: str, limit: int, lease_s: float) -> bool:
    """Take one of the user's ``limit`` slots for ``channel_id`` on ``node`` (under the user's row lock,
    one statement); False when all are held by calls in progress on live nodes."""
    return bool(await db.fetchval("SELECT take_line_slot($1, $2, $3, $4, $5)",
                                  user_id, node, channel_id, limit, lease_s))


@_translated
async def release_slots(db: Any, node: str, channel_ids: Sequence[str]) -> None:
    await db.execute("DELETE FROM line_channel_slot WHERE node_id = $1 AND channel_id = ANY($2::text[])",
                     node, list(channel_ids))


@_translated
async def node_slot_channels(db: Any, node: str) -> list[str]:
    """The channels holding a slot on ``node``."""
    return [r["channel_id"] for r in await db.fetch("SELECT channel_id FROM line_channel_slot WHERE node_id = $1",
                                                    node)]


@_translated
async def user_slots(db: Any, user_id: uuid.UUID) -> list[tuple[str, str]]:
    """(node, channel) of the user's slots."""
    rows = await db.fetch("SELECT node_id, channel_id FROM line_channel_slot WHERE user_id = $1 ORDER BY taken_at",
                          user_id)
    return [(r["node_id"], r["channel_id"]) for r in rows]


@_translated
async def heartbeat(db: Any, node: str, lease_s: float) -> int:
    """Renew ``node``'s heartbeat and free the slots of nodes whose engine has not renewed its own for
    ``lease_s`` seconds; returns how many slots were freed."""
    async with _connection(db) as conn, conn.transaction():
        await conn.execute("INSERT INTO engine_node (node_id) VALUES ($1) "
                           "ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()", node)
        freed = await conn.fetchval(
            """WITH gone AS (
                   DELETE FROM line_channel_slot s
                    WHERE NOT EXISTS (SELECT 1 FROM engine_node n WHERE n.node_id = s.node_id
                                         AND n.heartbeat_at > clock_timestamp() - make_interval(secs => $1))
                   RETURNING 1)
               SELECT count(*) FROM gone""", lease_s)
    return int(freed or 0)


__all__ = ["Account", "LineUser", "SipUser", "add_user", "assign_number", "create_account", "get_account",
           "get_user", "heartbeat", "node_slot_channels", "release_slots", "remove_user", "take_slot",
           "user_for_did", "user_for_endpoint", "user_slots", "users_of_account"]
