"""A call an operator's own dialplan sends through the FastAGI gate, on real Asterisk with SIPp: the
gate's decision leaves a callctl CDR on the calling channel (issue 15 item 19)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from callctl.agi.server import AgiRequest, AgiServer
from callctl.errors import StoreUnavailable
from scripts.devstack import AsteriskInstance
from tests.integration.test_gating_asterisk import LOCATION
from tests.integration.test_lines_calls import (
    PHONE_IP,
    asterisk,  # noqa: F401 (its Asterisk: realtime phones, CEL)
    line_user,
)
from tests.integration.test_lines_cli import cli, db
from tests.support import sipp
from tests.support.asterisk import render_prompts, wait_for

pytestmark = pytest.mark.integration


def test_a_call_through_the_fastagi_gate_leaves_a_cdr_with_the_decision(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:  # noqa: F811
    render_prompts(asterisk)
    user = line_user(database_url, credit="10")
    db(database_url, "UPDATE ps_endpoints SET context = 'callctl-agi-gate' WHERE id = $1", user["sip_username"])
    d = daemon_factory()
    d.wait_for_log("agi_listening", 20)
    agi_port = int(d.env["CALLCTL_AGI_LISTEN"].rpartition(":")[2])
    asterisk.rx(f"dialplan set global CALLCTL_AGI agi://127.0.0.1:{agi_port}")
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    auth = (user["sip_username"], user["sip_password"])
    call = sipp.call(asterisk.sip_port, "0123456789", [("pause", 1000), ("bye", None)],
                     caller=user["sip_username"], auth=auth, local_ip=PHONE_IP)
    assert call.ok, call.stderr
    assert sipp.finish(*far).ok
    refused = sipp.call(asterisk.sip_port, "+abc", [("wait_bye", None)], caller=user["sip_username"], auth=auth,
                        local_ip=PHONE_IP)
    assert refused.ok, refused.stderr

    def gate_cdrs() -> list[dict[str, Any]]:
        return db(database_url, "SELECT channel_id, direction, disposition, to_number, extra FROM cdr "
                                "WHERE account_id = $1 AND extra->>'decided_by' = 'fastagi_gate' ORDER BY started_at",
                  user["account_id"])

    wait_for(lambda: len(gate_cdrs()) == 2, 10, "the gate's two CDRs")
    allowed, denied = gate_cdrs()
    assert (allowed["direction"], allowed["disposition"], allowed["to_number"]) == \
        ("inbound", "GATE_ALLOWED", "+33123456789")
    assert (denied["disposition"], json.loads(denied["extra"])["rule"]) == ("GATE_REFUSED", "number_invalid")
    # The CDR is on the calling channel: Asterisk's own uniqueid of the phone's channel.
    channels = db(database_url, "SELECT DISTINCT uniqueid FROM cel WHERE channame LIKE $1 AND eventtype = 'CHAN_START'",
                  f"PJSIP/{user['sip_username']}-%")
    assert {allowed["channel_id"], denied["channel_id"]} <= {c["uniqueid"] for c in channels}
    assert not d.tracebacks()


def test_when_the_gate_cannot_decide_an_emergency_call_still_gets_asterisks_own_decision(
        asterisk: AsteriskInstance, database_url: str) -> None:  # noqa: F811
    """A gate that fails (PostgreSQL down, a bug) must not refuse an emergency call as if it had decided."""
    user = line_user(database_url)
    cli(database_url, "account", "emergency", user["account_id"], "--enable", "--location", LOCATION, "--verified")
    db(database_url, "UPDATE ps_endpoints SET context = 'callctl-agi-gate' WHERE id = $1", user["sip_username"])

    async def broken(request: AgiRequest) -> Mapping[str, str]:
        raise StoreUnavailable("PostgreSQL is down (test)")

    async def serve_and_call() -> sipp.SippResult:
        async with AgiServer("127.0.0.1", 0, broken) as srv:
            asterisk.rx(f"dialplan set global CALLCTL_AGI agi://127.0.0.1:{srv.port}")
            gateway = sipp.start_far_end(asterisk.emergency_port, "answer")
            result = await asyncio.to_thread(
                sipp.call, asterisk.sip_port, "112", [("pause", 1000), ("bye", None)], caller=user["sip_username"],
                auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
            assert result.ok, result.stderr
            return await asyncio.to_thread(sipp.finish, *gateway)

    gw = asyncio.run(serve_and_call())
    assert gw.ok, gw.stderr
    invite = next(text for _at, text in gw.messages if "INVITE sip:" in text)
    assert "INVITE sip:112@" in invite and f"X-Callctl-Location: {LOCATION}" in invite
