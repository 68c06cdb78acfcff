"""The FastAGI ``gate`` route: the gating decision as channel variables for extensions.conf."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from callctl.agi.server import AgiRequest
from callctl.countries import Country
from callctl.gating.service import decide
from callctl.store import gating as store


def _deny(rule: str, reason: str) -> dict[str, str]:
    return {"CALLCTL_GATE": "deny", "CALLCTL_GATE_RULE": rule, "CALLCTL_GATE_REASON": reason}


def gate_handler(pool: Any, countries: Mapping[str, Country],
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 ) -> Callable[[AgiRequest], Awaitable[Mapping[str, str]]]:
    """``AGI(agi://127.0.0.1:4573/gate?account=ID)`` or ``AGI(agi://127.0.0.1:4573/gate,ID)``."""

    async def handle(request: AgiRequest) -> Mapping[str, str]:
        if request.script != "gate":
            return _deny("agi_unknown_route", f"no FastAGI route '{request.script}' (known: gate)")
        raw = request.params.get("account") or (request.args[0] if request.args else "")
        try:
            account_id = uuid.UUID(raw)
        except ValueError:
            return _deny("agi_bad_account", "pass the account: agi://127.0.0.1:4573/gate?account=ID")
        country = request.params.get("country") or await store.account_country(pool, account_id)
        if country is None:
            return _deny("unknown_account", f"no account {account_id}")
        dialer = await store.get_dialer(pool, account_id)
        automated = dialer is not None and dialer.automated
        decision = await decide(pool, countries, account_id, request.get("agi_callerid"),
                                request.get("agi_extension"), clock(), account_country=country,
                                automated=automated)
        return {"CALLCTL_GATE": decision.decision, "CALLCTL_GATE_RULE": decision.rule,
                "CALLCTL_GATE_REASON": decision.reason, "CALLCTL_GATE_ROUTE": decision.route or "",
                "CALLCTL_GATE_NUMBER": decision.number_e164,
                "CALLCTL_GATE_EMERGENCY": "1" if decision.emergency else "0",
                "CALLCTL_GATE_LOCATION": decision.location or "",
                "CALLCTL_GATE_COUNTRY": country.strip().upper()}

    return handle
