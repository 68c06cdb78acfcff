"""The originate action's checks that need neither PostgreSQL nor Asterisk (the rest: test_gating_asterisk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import callctl.conference.steps  # noqa: F401  (registers the conference step type)
from callctl.flows.loader import load_dialplan
from callctl.gating.originate import ORIGINATE_ARG, Dialer

PLAN = load_dialplan(Path(__file__).resolve().parents[2] / "dialplan")
BODY = {"account": "6f1c3c9e-3d3b-4c39-9a57-0c7a4f1e2d10", "from": "+33170000001", "to": "+442079460000",
        "flow": "welcome"}


class _NoPool:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("the store must not be used")


def _dialer(ready: bool, placed: list[str]) -> Dialer:
    async def originate(channel_id: str, endpoint: str, **_: Any) -> None:
        placed.append(endpoint)

    return Dialer(_NoPool(), lambda: PLAN, originate, lambda: ready)


async def test_nothing_is_placed_or_recorded_while_asterisk_is_down_or_the_engine_drains() -> None:
    placed: list[str] = []
    status, answer = await _dialer(False, placed).request(dict(BODY))
    assert status == 503 and "draining" in answer["error"] and placed == []


async def test_a_malformed_request_or_an_unknown_flow_is_refused_before_the_gate() -> None:
    placed: list[str] = []
    dialer = _dialer(True, placed)
    assert (await dialer.request({**BODY, "account": "nope"}))[0] == 400
    assert (await dialer.request({k: v for k, v in BODY.items() if k != "to"}))[0] == 400
    status, answer = await dialer.request({**BODY, "flow": "welcom"})
    assert status == 400 and answer["error"].startswith("unknown flow 'welcom' (known: ") and placed == []


def test_only_calls_the_engine_originated_carry_the_originate_argument() -> None:
    assert Dialer.is_originated((ORIGINATE_ARG, "welcome"))
    assert not Dialer.is_originated(("line-outbound",)) and not Dialer.is_originated(())
