"""A FastAGI handler that takes longer than ``handler_timeout_s`` gets no more time: the channel is
answered "gate unavailable" (extensions.conf's own branch), the failure is logged; a server that stops
while a handler runs closes the session without counting it as refused."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from structlog.testing import capture_logs

from callctl.agi.server import AgiRequest, AgiServer
from tests.unit.test_agi_server import HEADERS, _close, _read_all


async def _stuck(request: AgiRequest) -> Mapping[str, str]:
    await asyncio.sleep(30)
    return {"CALLCTL_GATE": "allow"}


async def test_a_handler_past_its_deadline_answers_gate_unavailable() -> None:
    with capture_logs() as logs:
        async with AgiServer("127.0.0.1", 0, _stuck, handler_timeout_s=0.2, read_timeout_s=5.0) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(HEADERS)
            commands = []
            for _ in range(3):
                commands.append(await asyncio.wait_for(reader.readline(), 5))
                writer.write(b"200 result=1\n")
            assert await asyncio.wait_for(_read_all(reader), 5) == b""
            await _close(writer)
    assert commands == [b'SET VARIABLE CALLCTL_GATE ""\n', b'SET VARIABLE CALLCTL_GATE_RULE "gate_unavailable"\n',
                        b'SET VARIABLE CALLCTL_GATE_REASON "the gate could not decide"\n']
    failed = [e for e in logs if e["event"] == "agi_handler_failed"]
    assert [(e["error"], e["script"]) for e in failed] == [("TimeoutError()", "gate")]
    assert not [e for e in logs if e["event"] == "agi_session_refused"]


async def test_a_handler_within_a_deadline_longer_than_the_read_timeout_is_waited_for() -> None:
    async def slow(request: AgiRequest) -> Mapping[str, str]:
        await asyncio.sleep(0.4)
        return {"CALLCTL_GATE": "allow"}

    async with AgiServer("127.0.0.1", 0, slow, handler_timeout_s=5.0, read_timeout_s=0.2) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(HEADERS)
        assert await asyncio.wait_for(reader.readline(), 5) == b'SET VARIABLE CALLCTL_GATE "allow"\n'
        # The reply wait is the read timeout's again: a peer that never answers is cut after 0.2 s.
        assert await asyncio.wait_for(_read_all(reader), 2) == b""
        await _close(writer)


async def test_a_server_that_stops_while_a_handler_runs_closes_the_session_quietly() -> None:
    started = asyncio.Event()

    async def stuck(request: AgiRequest) -> Mapping[str, str]:
        started.set()
        return await _stuck(request)

    with capture_logs() as logs:
        async with AgiServer("127.0.0.1", 0, stuck, handler_timeout_s=10.0) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(HEADERS)
            await asyncio.wait_for(started.wait(), 5)
        assert await asyncio.wait_for(_read_all(reader), 5) == b""
        await _close(writer)
    assert not [e for e in logs if e["event"] in ("agi_session_refused", "agi_handler_failed")]
