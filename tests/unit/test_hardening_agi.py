"""A FastAGI flood is not a log flood (issue 15 item 16): refused sessions are logged per peer and
interval with counts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from structlog.testing import capture_logs

from callctl.agi.refusals import RefusalTally
from callctl.agi.server import AgiRequest, AgiServer
from tests.unit.test_agi_server import _close, _normal_session

FLOOD = 900


async def _handler(request: AgiRequest) -> Mapping[str, str]:
    return {"CALLCTL_GATE": "allow", "CALLCTL_GATE_RULE": "x"}


async def _half_open(port: int) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\nagi_network_scr")  # a partial header, then gone
    await writer.drain()
    await _close(writer)


async def test_nine_hundred_half_open_sessions_leave_two_log_lines_with_the_count() -> None:
    with capture_logs() as logs:
        async with AgiServer("127.0.0.1", 0, _handler) as srv:
            for start in range(0, FLOOD, 100):  # a hundred at a time: the test's own file descriptors
                await asyncio.gather(*(_half_open(srv.port) for _ in range(start, start + 100)))

            async def wait_for_all_refused() -> None:
                while srv._sessions:
                    await asyncio.wait(list(srv._sessions))

            await asyncio.wait_for(wait_for_all_refused(), 30)
            assert len(await asyncio.wait_for(_normal_session(srv.port), 5)) == 2  # service as usual
    refused = [e for e in logs if e["event"].startswith("agi_session")]
    assert [e["event"] for e in refused] == ["agi_session_refused", "agi_sessions_refused"], refused[:3]
    assert refused[0]["peer"] == "127.0.0.1"
    summary = refused[1]
    assert (summary["peer"], summary["reason"], summary["refused"]) == ("127.0.0.1", "closed_mid_header", FLOOD - 1)


def test_each_interval_logs_the_first_refusal_of_a_kind_then_one_count_per_peer_and_kind() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []
    now = [0.0]
    tally = RefusalTally(60.0, emit=lambda event, **kw: lines.append((event, kw)), clock=lambda: now[0])
    for _ in range(5):
        tally.refused("10.0.0.1", "closed_mid_header")
    tally.refused("10.0.0.2", "peer_not_allowed")
    tally.refused("10.0.0.1", "command_refused: 510 Invalid")
    tally.refused("10.0.0.1", "command_refused: 520 Other")  # the same kind: counted
    assert [(e, kw["peer"], kw["reason"]) for e, kw in lines] == [
        ("agi_session_refused", "10.0.0.1", "closed_mid_header"),
        ("agi_session_refused", "10.0.0.2", "peer_not_allowed"),
        ("agi_session_refused", "10.0.0.1", "command_refused: 510 Invalid")]
    now[0] = 61.0
    tally.refused("10.0.0.1", "closed_mid_header")  # a new interval: the last one's counts first
    assert lines[3:5] == [
        ("agi_sessions_refused", {"peer": "10.0.0.1", "reason": "closed_mid_header", "refused": 4, "interval_s": 61.0}),
        ("agi_sessions_refused", {"peer": "10.0.0.1", "reason": "command_refused", "refused": 1, "interval_s": 61.0})]
    assert lines[5][0] == "agi_session_refused" and len(lines) == 6  # 10.0.0.2 had nothing more to count
    tally.close()
    assert len(lines) == 6  # nothing counted since the new interval's first line
