"""What the feature CLIs share, so none imports another's: the `callctl account ACTION` group several
features add actions to, hooks between them wired by ``callctl.cli``, ``--now`` parsing, and running
one piece of work on a pool with its JSON answer, alone, on stdout."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from callctl.config import Settings
from callctl.errors import CallctlError

_ACCOUNT_ACTIONS: dict[int, Any] = {}

# Run after a command changed an account's phones or numbers (pool, settings, account id); set by
# callctl.cli to gating's refresh of the emergency variables on the account's endpoints.
AccountPhonesChanged = Callable[[Any, Settings, uuid.UUID], Awaitable[None]]
_PHONES_CHANGED: list[AccountPhonesChanged] = []


class RecordingFiles(Protocol):
    """What privacy commands do to recordings (callctl.recording.retention, wired by callctl.cli)."""

    def describe(self, rec: Any, *, check: bool = True) -> dict[str, Any]: ...
    async def erase_person(self, db: Any, recs: list[Any], now: dt.datetime, *, dry_run: bool) -> dict[str, Any]: ...
    async def erase_account(self, db: Any, account_id: uuid.UUID, now: dt.datetime, *,
                            dry_run: bool) -> dict[str, Any]: ...
    def export(self, rec: Any, dest: Path) -> Path: ...
    async def delete_on_request(self, db: Any, rec: Any, at: dt.datetime) -> dict[str, Any]: ...


class _RecordingFilesSlot:
    """Stands for the RecordingFiles the CLI root wires in (a feature never imports another)."""

    impl: RecordingFiles | None = None

    def _get(self) -> RecordingFiles:
        if self.impl is None:
            raise CallctlError("recordings are not wired into this command (callctl.cli wires them)")
        return self.impl

    def describe(self, rec: Any, *, check: bool = True) -> dict[str, Any]:
        return self._get().describe(rec, check=check)

    async def erase_person(self, db: Any, recs: list[Any], now: dt.datetime, *, dry_run: bool) -> dict[str, Any]:
        return await self._get().erase_person(db, recs, now, dry_run=dry_run)

    async def erase_account(self, db: Any, account_id: uuid.UUID, now: dt.datetime, *,
                            dry_run: bool) -> dict[str, Any]:
        return await self._get().erase_account(db, account_id, now, dry_run=dry_run)

    def export(self, rec: Any, dest: Path) -> Path:
        return self._get().export(rec, dest)

    async def delete_on_request(self, db: Any, rec: Any, at: dt.datetime) -> dict[str, Any]:
        return await self._get().delete_on_request(db, rec, at)


recordings = _RecordingFilesSlot()

# Screens an outbound number must pass besides gating (the fraud screen: destination permissions,
# suspension), wired by callctl.cli: (pool, settings, account, account country, E.164) -> (rule, reason).
OutboundScreen = Callable[[Any, Settings, uuid.UUID, str, str], Awaitable[tuple[str, str] | None]]
_SCREENS: list[OutboundScreen] = []


def on_outbound_screen(hook: OutboundScreen) -> None:
    _SCREENS.append(hook)


async def screen_outbound(pool: Any, settings: Settings, account_id: uuid.UUID, country: str,
                          number: str) -> tuple[str, str] | None:
    """The first refusal of the wired screens, or None."""
    for hook in _SCREENS:
        refusal = await hook(pool, settings, account_id, country, number)
        if refusal is not None:
            return refusal
    return None


def account_actions(sub: Any, common: argparse.ArgumentParser) -> Any:
    """The sub-parsers of `callctl account` (created on first use), for a feature's register() to add
    its actions to: lines (create, show), emergency, recording, suspension."""
    actions = _ACCOUNT_ACTIONS.get(id(sub))
    if actions is None:
        account = sub.add_parser("account", parents=[common], help="accounts: business lines and their options")
        actions = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
        _ACCOUNT_ACTIONS[id(sub)] = actions
    return actions


def on_account_phones_changed(hook: AccountPhonesChanged) -> None:
    if hook not in _PHONES_CHANGED:
        _PHONES_CHANGED.append(hook)


async def account_phones_changed(pool: Any, settings: Settings, account_id: uuid.UUID) -> None:
    for hook in _PHONES_CHANGED:
        await hook(pool, settings, account_id)


def parse_now(raw: str | None) -> dt.datetime:
    """``--now ISO8601`` (with a time zone), or the current instant."""
    if raw is None:
        return dt.datetime.now(dt.UTC)
    try:
        at = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise CallctlError(f"--now {raw!r} is not ISO 8601 (e.g. 2026-12-01T14:00:00+00:00)") from None
    if at.tzinfo is None:
        raise CallctlError(f"--now {raw!r} has no time zone: add +00:00 or Z")
    return at


def print_json(doc: Any) -> int:
    """The command's answer: one JSON document on stdout (logs and warnings go to stderr)."""
    print(json.dumps(doc, indent=2, default=str))
    return 0


def json_with_pool(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> int:
    """Open a pool, run ``work(pool)``, close the pool, print its answer as JSON."""
    from callctl.store.db import run_with_pool

    return print_json(run_with_pool(settings.database_url, work))
