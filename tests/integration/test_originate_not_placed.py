"""An originate the gate allowed but that was never placed does not use up one of the callee's 4 calls in
30 days: Asterisk refusing the originate, PostgreSQL failing on the way (issue 15, item 20)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from callctl.billing.service import Authorization
from callctl.errors import AriError, StoreUnavailable
from callctl.gating import originate as originate_module
from callctl.gating.originate import Dialer
from callctl.store import gating as store
from tests.integration.test_gating_postgres import AT, PLAN, _account

pytestmark = pytest.mark.integration

BODY = {"from": "+33170000001", "to": "+33612345678", "flow": "welcome"}


class _Billing:
    def __init__(self) -> None:
        self.fail = False

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization:
        if self.fail:
            raise StoreUnavailable("PostgreSQL at 127.0.0.1 is unreachable: connection refused")
        return Authorization(60, None, None)

    async def finish(self, auth: Authorization, billed_seconds: int) -> dict[str, object]:
        return {}


async def test_originates_asterisk_refused_do_not_count_towards_the_callees_cap(database_url: str) -> None:
    placed: list[str] = []
    refuse = [True]

    async def originate(channel_id: str, endpoint: str, **_: object) -> None:
        if refuse[0]:
            raise AriError("ARI POST channels/x failed: HTTP 500 Allocation failed")
        placed.append(channel_id)

    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        dialer = Dialer(pool, lambda: PLAN, originate, lambda: True, lambda: AT, billing=_Billing())
        body = {**BODY, "account": str(acc)}
        for _ in range(5):  # more than the cap: none of them was placed
            status, answer = await dialer.request(dict(body))
            assert status == 502 and answer["originated"] is False and "Allocation failed" in answer["error"]
        refuse[0] = False
        answers = [await dialer.request(dict(body)) for _ in range(5)]
        assert [a["originated"] for _s, a in answers] == [True] * 4 + [False] and len(placed) == 4
        assert answers[-1][1]["rule"] == "callee_cap"
        rows = await store.decisions(pool, acc)
        await dialer.close()
    by_rule = sorted((r["decision"], r["rule"], r["illegitimate"]) for r in rows)
    assert by_rule == [("allow", "compliant", False)] * 4 + [("deny", "callee_cap", True)] + \
        [("deny", "originate_failed", False)] * 5
    assert all("Allocation failed" in r["reason"] for r in rows if r["rule"] == "originate_failed")


async def test_an_originate_stopped_by_a_postgresql_error_is_recorded_as_not_placed_once_it_is_back(
        database_url: str, monkeypatch: Any) -> None:
    """The record of the allowed attempt is corrected at once, or in the background while PostgreSQL
    still refuses (here its first correction fails as the database would during an outage)."""
    monkeypatch.setattr(originate_module, "NOT_PLACED_RETRY_S", 0.05)
    real_not_placed = store.not_placed
    outage = [1]
    written = asyncio.Event()

    async def not_placed(db: Any, record_id: int, rule: str, reason: str) -> None:
        if outage[0]:
            outage[0] -= 1
            raise StoreUnavailable("PostgreSQL at 127.0.0.1 is unreachable: connection refused")
        await real_not_placed(db, record_id, rule, reason)
        written.set()

    monkeypatch.setattr(store, "not_placed", not_placed)

    async def originate(channel_id: str, endpoint: str, **_: object) -> None:
        raise AssertionError("never placed")

    billing = _Billing()
    billing.fail = True
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        dialer = Dialer(pool, lambda: PLAN, originate, lambda: True, lambda: AT, billing=billing)
        status, answer = await dialer.request({**BODY, "account": str(acc)})
        assert status == 503 and answer["originated"] is False and "unreachable" in answer["error"]
        assert outage == [0]  # the first correction failed: it is retried in the background
        async with asyncio.timeout(10):
            await written.wait()
        rows = await store.decisions(pool, acc)
        await dialer.close()
    assert [(r["decision"], r["rule"], r["illegitimate"]) for r in rows] == [("deny", "store_unavailable", False)]
