"""Personal links to a conference's Online Space (pure): unguessable tokens, their hashes, the URL
and whether a link still opens (issue 19, docs/conferences.md).

A token is 192 random bits (``secrets.token_urlsafe(24)``); only its SHA-256 is stored, so the
database never holds a usable link and a link can be re-issued but never shown again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

TOKEN_BYTES = 24  # 192 bits (the issue asks for at least 128)
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32}$")  # token_urlsafe(24): 32 characters
LINK_PATH = "/s/"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def well_formed(token: str) -> bool:
    """Cheap shape check before any lookup: anything else is a guess."""
    return bool(TOKEN_SHAPE.fullmatch(token))


def link_url(public_base_url: str, token: str) -> str:
    return public_base_url.rstrip("/") + LINK_PATH + token


def public_base(space_public_url: str, space_listen: str) -> str:
    """The base URL of links: the configured public URL, else the listen address (loopback)."""
    if space_public_url.strip():
        return space_public_url.strip().rstrip("/")
    host, _, port = space_listen.rpartition(":")
    return f"http://{host or '127.0.0.1'}:{port}"


def link_state(*, revoked_at: dt.datetime | None, cancelled_at: dt.datetime | None, ends_at: dt.datetime,
               valid_after_s: float, now: dt.datetime) -> str:
    """'open', 'replaced' (re-issued), 'cancelled' or 'expired' (``valid_after_s`` after the end)."""
    if cancelled_at is not None:
        return "cancelled"
    if revoked_at is not None:
        return "replaced"
    if now >= ends_at + dt.timedelta(seconds=valid_after_s):
        return "expired"
    return "open"
