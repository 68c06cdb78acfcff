"""Keeping Asterisk's side of emergency gating in step with the engine: each account's emergency status
as endpoint variables (at start and after a reload, from the current country table), and the emergency
calls Asterisk decided alone while no engine was connected (imported once, with their CDRs)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from callctl.cdr.record import CdrRecord
from callctl.countries import Country
from callctl.dialplans import load_countries
from callctl.errors import CallctlError, StoreError
from callctl.gating.asterisk_calls import write_emergency_cdrs
from callctl.logging import get_logger
from callctl.store import gating as gating_store

log = get_logger("callctl.gating")


class EmergencyUpkeep:
    def __init__(self, pool: Any, countries: Callable[[], Mapping[str, Country]],
                 submit: Callable[[CdrRecord], None]) -> None:
        self._pool = pool
        self._countries = countries
        self._submit = submit

    async def refresh_endpoint_vars(self) -> None:
        """Asterisk's copy of every account's emergency status (endpoint set_var), from the current country
        table: written at start and after a reload, so an edited table reaches Asterisk (docs/gating.md)."""
        try:
            changed = await gating_store.refresh_endpoint_vars(self._pool, self._countries())
        except StoreError as exc:
            log.warning("emergency_vars_refresh_failed", error=exc.message)
            return
        log.info("emergency_vars_refreshed", changed=changed)

    async def import_asterisk_decisions(self) -> None:
        """Emergency calls Asterisk decided while this engine was away: into gating_decision, once."""
        try:
            imported = await gating_store.import_asterisk_decisions(self._pool)
        except StoreError as exc:
            log.warning("asterisk_emergency_import_failed", error=exc.message)
            return
        if imported:
            log.warning("emergency_calls_decided_by_asterisk", calls=len(imported),
                        refused=sum(1 for decision, _ in imported if decision == "deny"),
                        rules=sorted({rule for _, rule in imported}))
        await write_emergency_cdrs(self._pool, self._submit)  # their CDRs too, once their channels have ended


async def refresh_account_endpoint_vars(pool: Any, dialplan_dir: Path, account_id: uuid.UUID) -> None:
    """For a one-shot command that changed an account's phones or numbers: Asterisk's copy of the account's
    emergency status (the callback number is a DID; docs/gating.md). A dialplan that does not load leaves
    it to the daemon's next start or reload (said on stderr)."""
    try:
        countries = load_countries(dialplan_dir)
    except CallctlError as exc:
        print(f"callctl: warning: emergency variables of the account's phones not written "
              f"({exc.message.splitlines()[0]}); the daemon writes them at its next start or reload", file=sys.stderr)
        return
    await gating_store.refresh_endpoint_vars(pool, countries, account_id)
