"""The bans of a cluster's Kamailio (kamailio/kamailio.cfg, htable ``ipban``: address -> ban end, epoch
seconds), read and lifted through its ctl socket with ``kamcmd``: the edge half of `callctl fraud blocks`
and `callctl fraud unblock` (docs/security.md, "Behind Kamailio")."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import shutil
from dataclasses import dataclass
from typing import Any

from callctl.fraud import FraudError

BAN_TABLE = "ipban"
KAMCMD_TIMEOUT_S = 10.0
# One item of `kamcmd htable.dump`: "name: 203.0.113.7" then, a few lines on, "value: 1767200000".
_ITEM = re.compile(r"name:\s*(\S+)\s+value:\s*(\d+)")


@dataclass(frozen=True)
class EdgeBan:
    address: str
    until: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "until": self.until.isoformat(), "where": "kamailio"}


def parse_dump(text: str) -> list[EdgeBan]:
    """`kamcmd htable.dump ipban` -> the bans, by address (an expired one Kamailio has not swept yet is left out)."""
    now = dt.datetime.now(dt.UTC)
    bans = [EdgeBan(name, dt.datetime.fromtimestamp(int(value), dt.UTC)) for name, value in _ITEM.findall(text)]
    return sorted((b for b in bans if b.until > now), key=lambda b: b.address)


def ban_key(address: str) -> str:
    """The table's key for ``address`` (Kamailio writes the source address in its canonical form)."""
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        raise FraudError(f"'{address}' is not an IP address (e.g. 203.0.113.7 or 2001:db8::7)") from None


async def _kamcmd(ctl: str, *command: str) -> tuple[int, str]:
    kamcmd = shutil.which("kamcmd")
    if kamcmd is None:
        raise FraudError(f"kamailio_ctl {ctl}: kamcmd not found (Debian package kamailio)")
    proc = await asyncio.create_subprocess_exec(kamcmd, "-s", ctl, *command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), KAMCMD_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FraudError(f"kamailio_ctl {ctl}: no answer within {KAMCMD_TIMEOUT_S:g} s") from None
    text = (out + err).decode(errors="replace")
    if "connect" in text and "ERROR" in text:
        raise FraudError(f"kamailio_ctl {ctl}: cannot reach Kamailio's ctl socket ({text.strip().splitlines()[0]}); "
                         "is Kamailio running, and is kamailio_ctl its ctl module's address?")
    return proc.returncode or 0, text


async def edge_bans(ctl: str) -> list[EdgeBan]:
    code, text = await _kamcmd(ctl, "htable.dump", BAN_TABLE)
    if code != 0:
        raise FraudError(f"kamailio_ctl {ctl}: htable.dump {BAN_TABLE} failed: {text.strip()[:300]}")
    return parse_dump(text)


async def lift_edge_ban(ctl: str, address: str) -> EdgeBan | None:
    """Lift the ban of ``address``: the ban lifted (for the audit trail), None when it was not banned."""
    key = ban_key(address)
    ban = next((b for b in await edge_bans(ctl) if b.address == key), None)
    if ban is None:
        return None
    code, text = await _kamcmd(ctl, "htable.delete", BAN_TABLE, key)
    if code != 0:
        raise FraudError(f"kamailio_ctl {ctl}: htable.delete {BAN_TABLE} {key} failed: {text.strip()[:300]}")
    return ban
