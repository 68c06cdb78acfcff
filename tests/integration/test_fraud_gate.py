"""The fraud screen on the two paths without a SIP phone: the FastAGI gate (and `callctl gate`) of an
operator's dialplan, and calls the engine originates; emergency numbers are never screened."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from callctl.billing.service import Authorization
from callctl.fraud.service import FraudService
from callctl.gating.originate import Dialer
from tests.integration.test_gating_agi import agi_session
from tests.integration.test_gating_postgres import AT, PLAN, _account
from tests.integration.test_lines_cli import cli, db, run_cli

pytestmark = pytest.mark.integration


def suspend(database_url: str, account: str) -> None:
    db(database_url, "INSERT INTO fraud_hold (account_id, rule, reason) VALUES ($1::uuid, 'spend_hour_limit', "
                     "'test')", account)


def test_the_fastagi_gate_and_callctl_gate_refuse_barred_destinations_and_suspended_accounts_but_not_emergency(
        daemon_factory: Any, database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    d = daemon_factory()
    d.wait_for_log("agi_listening", 20)
    port = int(d.env["CALLCTL_AGI_LISTEN"].rpartition(":")[2])
    premium = agi_session(port, acc["id"], "0899123456", "+33170000001")
    assert (premium["CALLCTL_GATE"], premium["CALLCTL_GATE_RULE"]) == ("deny", "destination_premium_barred")
    assert premium["CALLCTL_GATE_DISPOSITION"] == "FRAUD_DESTINATION_PREMIUM_BARRED"
    assert "premium-rate" in premium["CALLCTL_GATE_REASON"]
    gate = run_cli(database_url, "gate", "--account", acc["id"], "--from", "+33170000001", "--to", "0899123456")
    assert gate.returncode == 0, gate.stderr
    assert (json.loads(gate.stdout)["decision"], json.loads(gate.stdout)["rule"]) == \
        ("deny", "destination_premium_barred")
    assert agi_session(port, acc["id"], "0123456789", "+33170000001")["CALLCTL_GATE"] == "allow"

    suspend(database_url, acc["id"])
    held = agi_session(port, acc["id"], "0123456789", "+33170000001")
    assert (held["CALLCTL_GATE"], held["CALLCTL_GATE_RULE"]) == ("deny", "outbound_suspended")
    # Emergency numbers are never subject to the fraud rules: the emergency gate alone decides.
    emergency = agi_session(port, acc["id"], "112", "+33170000001")
    assert (emergency["CALLCTL_GATE_EMERGENCY"], emergency["CALLCTL_GATE_RULE"]) == ("1", "emergency_not_enabled")
    refusals = db(database_url, "SELECT path, rule FROM fraud_refusal ORDER BY id")
    assert [(r["path"], r["rule"]) for r in refusals] == [("agi", "destination_premium_barred"),
                                                          ("agi", "outbound_suspended")]  # `gate` records nothing


class _Paid:
    """Prepaid billing that always pays (test_gating_postgres has the real one's contract)."""

    def __init__(self) -> None:
        self.finished: list[int] = []

    async def authorize(self, account_id: uuid.UUID, from_e164: str, to_e164: str, *,
                        user_id: uuid.UUID | None = None, channel_id: str | None = None) -> Authorization:
        return Authorization(60, uuid.uuid4(), None)

    async def finish(self, auth: Authorization, billed_seconds: int) -> dict[str, object]:
        self.finished.append(billed_seconds)
        return {}


async def test_an_originated_call_to_a_barred_destination_is_not_placed_and_its_hold_is_given_back(
        database_url: str) -> None:
    placed: list[str] = []

    async def originate(channel_id: str, endpoint: str, **_: object) -> None:
        placed.append(endpoint)

    billing = _Paid()
    async with asyncpg.create_pool(database_url, min_size=2, max_size=4) as pool:
        acc = await _account(pool)
        dialer = Dialer(pool, lambda: PLAN, originate, lambda: True, lambda: AT, billing=billing)
        dialer.fraud = FraudService(pool)
        body = {"account": str(acc), "from": "+33170000001", "flow": "welcome"}
        status, answer = await dialer.request({**body, "to": "+8816123456789"})  # an Iridium satellite phone
        assert status == 200 and (answer["decision"], answer["rule"], answer["originated"]) == \
            ("deny", "destination_satellite_barred", False), answer
        assert placed == [] and billing.finished == [0]
        # Its dialer decision record says so, and does not use up one of the callee's 4 calls in 30 days.
        [record] = await pool.fetch("SELECT decision, rule, illegitimate FROM gating_decision")
        assert (record["decision"], record["rule"], record["illegitimate"]) == \
            ("deny", "destination_satellite_barred", False)
        status, answer = await dialer.request({**body, "to": "+442079460000"})
        assert answer["originated"] is True and placed == ["PJSIP/+442079460000@pstn"]
        admitted = await pool.fetch("SELECT destination, international FROM fraud_admission")
        assert [(r["destination"], r["international"]) for r in admitted] == [("+442079460000", True)]
