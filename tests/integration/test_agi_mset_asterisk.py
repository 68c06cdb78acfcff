"""The gate's variables reach the channel in one ``EXEC MSet`` (issue 17) and read back exactly in the
dialplan of a real Asterisk, whatever characters a reason text holds."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest

from callctl.agi.server import AgiRequest, AgiServer, variable_commands
from scripts.devstack import AsteriskInstance
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

CONTEXT = "callctl-test-mset"

HOSTILE = {
    "CALLCTL_GATE": "deny",
    "CALLCTL_GATE_RULE": "fraud:premium,rate",
    "CALLCTL_GATE_REASON": 'refused: "premium" numbers, (see §4) [rule a=b]; C:\\path\\ é ü 中 ok\\',
    "CALLCTL_T_PARENS": "((( unbalanced [[ and ) ] }",
    "CALLCTL_T_EQUALS": "=a==b=",
    "CALLCTL_T_SPACES": "  two leading, two trailing  ",
    "CALLCTL_T_QUOTES": '"\'"\'"',
    "CALLCTL_T_BACKSLASHES": "\\\\,\\\"\\",
    "CALLCTL_T_TAB": "a\tb|c;d&e",
    "CALLCTL_T_EMPTY": "",
    "CALLCTL_T_DOLLAR": "${EXTEN} $[1+1] costs $5",  # not carried by MSet: SET VARIABLE
}


def _ari(asterisk: AsteriskInstance, path: str) -> Any:
    req = urllib.request.Request(f"{asterisk.ari_url}ari/{path}")
    token = base64.b64encode(f"{asterisk.ari_user}:{asterisk.ari_password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _waiting_channel(asterisk: AsteriskInstance) -> dict[str, Any] | None:
    """The test channel once the dialplan is past the AGI (priority 2, its Wait)."""
    for channel in _ari(asterisk, "channels"):
        plan = channel.get("dialplan", {})
        if plan.get("context") == CONTEXT and plan.get("priority") == 2:
            return dict(channel)
    return None


def test_hostile_gate_variables_read_back_exactly_in_the_dialplan(asterisk: AsteriskInstance) -> None:
    commands = variable_commands(HOSTILE)
    assert [c.split(b" ", 2)[:2] for c in commands] == [[b"SET", b"VARIABLE"], [b"EXEC", b"MSet"]]
    seen: list[AgiRequest] = []

    async def hostile(request: AgiRequest) -> Mapping[str, str]:
        seen.append(request)
        return HOSTILE

    async def serve_and_read() -> dict[str, str]:
        async with AgiServer("127.0.0.1", 0, hostile) as srv:
            await asyncio.to_thread(asterisk.rx, f"dialplan add extension s,1,AGI(agi://127.0.0.1:{srv.port}/gate)"
                                                 f" into {CONTEXT} replace")
            await asyncio.to_thread(asterisk.rx, f"dialplan add extension s,2,Wait(20) into {CONTEXT} replace")
            await asyncio.to_thread(asterisk.rx, f"channel originate Local/s@{CONTEXT} application Wait 20")
            found: list[dict[str, Any]] = []

            def waiting() -> bool:
                channel = _waiting_channel(asterisk)
                if channel is not None:
                    found.append(channel)
                return channel is not None

            await asyncio.to_thread(wait_for, waiting, 15, "the channel past its AGI")
            channel_id = found[0]["id"]
            values = {}
            for name in HOSTILE:
                query = urllib.parse.urlencode({"variable": name})
                reply = await asyncio.to_thread(_ari, asterisk, f"channels/{channel_id}/variable?{query}")
                values[name] = reply["value"]
            await asyncio.to_thread(asterisk.rx, f"channel request hangup {found[0]['name']}")
            return values

    values = asyncio.run(serve_and_read())
    assert seen and seen[0].get("agi_version")  # a real Asterisk: the MSet path was taken
    assert values == HOSTILE
