"""A prepaid call an engine restart routes again (its first attempt was still ringing when the engine
died) is paid for once: the dead engine's hold on the caller's channel is settled for what its attempt
talked (nothing) before the new hold is taken. Real Asterisk with realtime SIP users, SIPp on both
sides, the first engine killed with SIGKILL."""

from __future__ import annotations

import signal
from decimal import Decimal
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance
from tests.integration import test_lines_calls as lines
from tests.integration.test_daemon import cdr_rows
from tests.integration.test_lines_cli import db
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

asterisk = lines.asterisk  # this module's Asterisk reads SIP users from the test's database
RATE = Decimal("0.60")  # EUR per minute (lines.line_user's deck): one second costs 0.01 EUR


def _trunk_ringing(asterisk: AsteriskInstance) -> bool:
    return any(line.startswith("PJSIP/pstn-")
               for line in asterisk.rx("core show channels concise", check=False).splitlines())


def _reroute_after_kill(daemon_factory: Any, asterisk: AsteriskInstance, user: dict[str, Any],
                        steps: list[tuple[str, object]]) -> tuple[Any, sipp.SippResult, sipp.SippResult]:
    """The user's call to the PSTN rings; its engine is killed; the next engine cancels that attempt and
    routes the call again, answered this time. Returns the new engine and both SIPp results."""
    # Rings long enough for a restart on a loaded machine (the first attempt must still ring then).
    far = sipp.start_far_end(asterisk.trunk_port, "cancelled_or_answer", ring_ms=12000, calls=2)
    d = daemon_factory()
    d.wait_until_ready()
    call = sipp.start_call(asterisk.sip_port, "0123456789", steps, caller=user["sip_username"],
                           auth=(user["sip_username"], user["sip_password"]), local_ip=lines.PHONE_IP,
                           bye_timeout_s=40)
    wait_for(lambda: _trunk_ringing(asterisk), 15, "the first attempt to ring the far end")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    restarted = daemon_factory()
    try:
        restarted.wait_for_log("abandoned_attempt_cancelled", 30)
        result = sipp.finish(*call)
        finished = restarted.wait_for_log("call_finished", 20)
        assert finished["flow"] == "line-outbound", finished  # routed again as the user's call out
        # Refused for credit "held by other calls" (its own dead hold): the far end would wait in vain.
        assert not restarted.events("line_call_refused"), restarted.events("line_call_refused")
        far_result = sipp.finish(*far)
    finally:
        if far[0].poll() is None:
            far[0].kill()
            far[0].communicate()
    return restarted, result, far_result


def _settled(database_url: str, account_id: str) -> dict[str, Any]:
    [credit] = db(database_url, "SELECT balance, reserved FROM credit_balance WHERE account_id = $1::uuid",
                  account_id)
    return dict(credit)


def _wait_for_holds_settled(database_url: str, account_id: str) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]] | None:
        rows = db(database_url, "SELECT settled_at, cost, billed_s, max_seconds FROM credit_reservation "
                                "WHERE account_id = $1::uuid ORDER BY created_at", account_id)
        return rows if len(rows) == 2 and all(r["settled_at"] is not None for r in rows) else None

    return list(wait_for(settled, 90, "both holds of the call (the dead engine's and the new one) settled"))


def test_a_prepaid_call_routed_again_after_an_engine_restart_is_debited_once(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    # More than one hold takes (4 h, 144 EUR): the new hold fits beside the dead engine's.
    user = lines.line_user(database_url, credit="200")
    restarted, result, far_result = _reroute_after_kill(daemon_factory, asterisk, user,
                                                        [("pause", 4000), ("bye", None)])
    assert result.ok, result.stderr
    assert far_result.ok, far_result.stderr
    [leg] = wait_for(lambda: [r for r in cdr_rows(database_url)
                              if r["direction"] == "outbound" and r["disposition"] == "ANSWERED"],
                     30, "the CDR of the answered leg")
    assert leg["billed_s"] >= 4 and leg["cost"] == RATE * leg["billed_s"] / 60
    first, second = _wait_for_holds_settled(database_url, user["account_id"])
    assert (first["cost"], first["billed_s"]) == (0, 0)  # the attempt that only rang talked nothing
    assert second["cost"] == leg["cost"]
    credit = _settled(database_url, user["account_id"])
    # Exactly one per-second charge for the seconds the caller talked: the balance never pays them twice.
    assert (credit["balance"], credit["reserved"]) == (Decimal(200) - leg["cost"], 0), credit
    assert not restarted.tracebacks()


def test_a_call_routed_again_gets_the_whole_credit_the_dead_engines_hold_had_reserved(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    """At the boundary: 0.10 EUR pays for 10 s, all of it held by the first attempt. The call routed
    again is authorised for the same 10 s (not refused for credit "held by other calls"), cut by Asterisk
    at its limit, and the balance ends at exactly zero."""
    user = lines.line_user(database_url, credit="0.10")
    restarted, result, far_result = _reroute_after_kill(daemon_factory, asterisk, user,
                                                        [("wait_bye", None)])
    assert result.ok, result.stderr  # cut by Asterisk at the limit
    assert far_result.ok, far_result.stderr
    first, second = _wait_for_holds_settled(database_url, user["account_id"])
    assert (first["cost"], first["billed_s"]) == (0, 0)
    assert (second["max_seconds"], second["cost"]) == (10, Decimal("0.10"))
    assert _settled(database_url, user["account_id"]) == {"balance": 0, "reserved": 0}
    assert not restarted.tracebacks()
