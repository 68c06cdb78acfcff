"""The hardened FastAGI reader: hostile sessions never stall a normal one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from callctl.agi.server import AgiRequest, AgiServer

HEADERS = (b"agi_network: yes\nagi_network_script: gate?account=abc\nagi_request: agi://127.0.0.1/gate?account=abc\n"
           b"agi_callerid: +33123456789\nagi_extension: 15\n\n")


async def _close(w: asyncio.StreamWriter) -> None:
    w.close()
    with contextlib.suppress(ConnectionError):
        await w.wait_closed()


async def _read_all(r: asyncio.StreamReader) -> bytes:
    """What the server sent before closing; a reset (closed with our bytes unread) counts as nothing."""
    try:
        return await r.read()
    except ConnectionResetError:
        return b""


async def _handler(request: AgiRequest) -> Mapping[str, str]:
    return {"CALLCTL_GATE": "deny", "CALLCTL_GATE_RULE": request.params["account"] + ":" + request.get("agi_extension")}


async def _normal_session(port: int, headers: bytes = HEADERS) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(headers)
    commands = []
    for _ in range(2):
        commands.append((await reader.readline()).decode())
        writer.write(b"200 result=1\n")
    await _close(writer)
    return commands


async def test_normal_session_gets_its_variables() -> None:
    async with AgiServer("127.0.0.1", 0, _handler) as srv:
        commands = await asyncio.wait_for(_normal_session(srv.port), 2)
    assert commands == ['SET VARIABLE CALLCTL_GATE "deny"\n', 'SET VARIABLE CALLCTL_GATE_RULE "abc:15"\n']


async def test_hostile_sessions_do_not_stall_a_normal_one() -> None:
    async with AgiServer("127.0.0.1", 0, _handler, read_timeout_s=1.0, header_timeout_s=1.5) as srv:
        async def half_sent() -> None:
            _, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(b"agi_network: yes\nagi_chan")
            await w.drain()
            await _close(w)

        async def huge() -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            try:
                for _ in range(256):
                    w.write(b"agi_x: " + b"y" * 4000 + b"\n")
                    await w.drain()
            except ConnectionError:
                pass
            data = await _read_all(r)
            await _close(w)
            return data

        async def slow_loris() -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            try:
                for byte in HEADERS:
                    w.write(bytes([byte]))
                    await w.drain()
                    await asyncio.sleep(0.3)  # 1 byte per 0.3 s: far beyond the header deadline
                    if r.at_eof():
                        break
            except ConnectionError:
                pass
            data = await _read_all(r)
            await _close(w)
            return data

        hostile = [asyncio.create_task(c) for c in (half_sent(), huge(), slow_loris())]
        latin1 = HEADERS.replace(b"agi_network: yes", b"agi_calleridname: Ren\xe9 \xff\xfe")
        normal = await asyncio.wait_for(_normal_session(srv.port), 1.0)
        garbled = await asyncio.wait_for(_normal_session(srv.port, latin1), 1.0)
        assert normal[0] == garbled[0] == 'SET VARIABLE CALLCTL_GATE "deny"\n'
        done = await asyncio.wait_for(asyncio.gather(*hostile), 5)
        assert done[1] == b"" and done[2] == b""  # closed without an answer


async def test_peer_outside_the_allow_list_is_refused() -> None:
    async with AgiServer("127.0.0.1", 0, _handler, allow=("10.0.0.0/8",)) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(HEADERS)
        assert await asyncio.wait_for(_read_all(reader), 2) == b""
        await _close(writer)
