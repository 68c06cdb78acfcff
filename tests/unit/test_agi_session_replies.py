"""The FastAGI session's command phase (issue 17: the reader is an asyncio.Protocol): a peer that stops
answering, answers with an error, or sends an endless reply line is refused with its reason and closed."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from callctl.agi.server import MAX_LINE_BYTES, AgiServer
from tests.unit.test_agi_server import HEADERS, _close, _handler, _read_all


async def _refused_after(reply: bytes | None) -> tuple[bytes, list[str]]:
    """One session whose first reply is ``reply`` (None: no reply at all); what the server sent after the
    first command, and the refusal reasons logged."""
    with capture_logs() as logs:
        async with AgiServer("127.0.0.1", 0, _handler, read_timeout_s=0.3) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(HEADERS)
            first = await asyncio.wait_for(reader.readline(), 2)
            assert first.startswith(b"SET VARIABLE CALLCTL_GATE ")
            if reply is not None:
                writer.write(reply)
            rest = await asyncio.wait_for(_read_all(reader), 5)
            await _close(writer)
    return rest, [e["reason"] for e in logs if e["event"] == "agi_session_refused"]


async def test_a_peer_that_never_answers_a_command_is_refused_for_read_timeout() -> None:
    assert await _refused_after(None) == (b"", ["read_timeout"])


async def test_a_command_answered_with_an_error_ends_the_session() -> None:
    assert await _refused_after(b"510 Invalid or unknown command\n") == (b"", ["command_refused: 510 Invalid or "
                                                                              "unknown command"])


async def test_an_endless_reply_line_is_refused_as_too_long() -> None:
    assert await _refused_after(b"2" * (MAX_LINE_BYTES + 10)) == (b"", ["line_too_long"])


async def test_a_reply_split_across_reads_is_one_reply() -> None:
    async with AgiServer("127.0.0.1", 0, _handler) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(HEADERS[:10])
        await writer.drain()
        writer.write(HEADERS[10:])
        commands = []
        for _ in range(2):
            commands.append(await asyncio.wait_for(reader.readline(), 2))
            writer.write(b"200 res")
            await writer.drain()
            writer.write(b"ult=1\n")
        assert await asyncio.wait_for(_read_all(reader), 2) == b""
        await _close(writer)
    assert [c.split(b" ")[2] for c in commands] == [b"CALLCTL_GATE", b"CALLCTL_GATE_RULE"]
