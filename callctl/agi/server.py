"""A small hardened FastAGI server (own reader, not panoramisk's: see FIELD-NOTES).

Bounded header size and count, a per-read timeout and a whole-header deadline (slow loris), non-UTF-8
tolerated (replaced), peers checked against an allow-list, each session its own task owned here, bad
sessions logged per peer and interval with counts (refusals.py: a flood is not a log flood). The
handler returns the channel variables to set with ``SET VARIABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

import structlog

from callctl.agi.refusals import RefusalTally

log = structlog.get_logger("callctl.agi")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_LINE_BYTES = 8 * 1024
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class AgiRequest:
    headers: Mapping[str, str]
    script: str  # path of agi_network_script/agi_request, e.g. "gate"
    params: Mapping[str, str]  # query of the AGI URL (agi://host/gate?account=...)
    args: tuple[str, ...]  # agi_arg_1, agi_arg_2, ...
    peer: str

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


Handler = Callable[[AgiRequest], Awaitable[Mapping[str, str]]]


class BadSession(Exception):
    """A session refused before its handler ran (its message is the log reason)."""


def _quote(value: str) -> str:
    clean = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{clean}"'


def parse_request(headers: Mapping[str, str], peer: str) -> AgiRequest:
    raw = headers.get("agi_network_script") or urllib.parse.urlsplit(headers.get("agi_request", "")).path
    split = urllib.parse.urlsplit(raw)
    script = split.path.strip("/")
    params = dict(urllib.parse.parse_qsl(split.query))
    if not params:
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers.get("agi_request", "")).query))
    args = []
    for i in range(1, 64):
        key = f"agi_arg_{i}"
        if key not in headers:
            break
        args.append(headers[key])
    return AgiRequest(headers=dict(headers), script=script, params=params, args=tuple(args), peer=peer)


class AgiServer:
    """``async with AgiServer(host, port, handler) as srv``: serving until the block ends."""

    def __init__(self, host: str, port: int, handler: Handler, *, allow: Iterable[str] = DEFAULT_ALLOW,
                 read_timeout_s: float = 5.0, header_timeout_s: float = 10.0,
                 handler_timeout_s: float = 5.0, refusals: RefusalTally | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.handler = handler
        self.allow = tuple(ipaddress.ip_network(n) for n in allow)
        self.read_timeout_s = read_timeout_s
        self.header_timeout_s = header_timeout_s
        self.handler_timeout_s = handler_timeout_s
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.refusals = refusals if refusals is not None else RefusalTally()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("AgiServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> AgiServer:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port,
                                                  limit=MAX_LINE_BYTES)
        log.info("agi_listening", host=self.host, port=self.port)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
        self.refusals.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._session(reader, writer))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    def _peer_allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    async def _readline(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout_s):
                line = await reader.readline()
        except TimeoutError:
            raise BadSession("read_timeout") from None
        except ValueError:  # LimitOverrunError: a line beyond MAX_LINE_BYTES
            raise BadSession("line_too_long") from None
        if not line.endswith(b"\n"):
            raise BadSession("closed_mid_header" if line else "closed")
        return line

    async def _read_headers(self, reader: asyncio.StreamReader) -> dict[str, str]:
        headers: dict[str, str] = {}
        total = 0
        try:
            async with asyncio.timeout(self.header_timeout_s):
                while True:
                    line = await self._readline(reader)
                    total += len(line)
                    if total > MAX_HEADER_BYTES:
                        raise BadSession("headers_too_large")
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    if not text:
                        return headers
                    if len(headers) >= MAX_HEADERS:
                        raise BadSession("too_many_headers")
                    key, sep, value = text.partition(":")
                    if not sep or not key.startswith("agi_"):
                        raise BadSession("malformed_header")
                    headers[key.strip()] = value.strip()
        except TimeoutError:
            raise BadSession("header_deadline") from None

    async def _command(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str) -> str:
        writer.write(command.encode("utf-8") + b"\n")
        await writer.drain()
        reply = (await self._readline(reader)).decode("utf-8", "replace").strip()
        if not reply.startswith("200"):
            raise BadSession(f"command_refused: {reply[:80]}")
        return reply

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "?"
        try:
            if not self._peer_allowed(peer):
                raise BadSession("peer_not_allowed")
            headers = await self._read_headers(reader)
            request = parse_request(headers, peer)
            try:
                async with asyncio.timeout(self.handler_timeout_s):
                    variables = await self.handler(request)
            except Exception as exc:  # a handler bug must not leave the channel without an answer
                log.error("agi_handler_failed", peer=peer, script=request.script, error=repr(exc))
                # No decision is not a refusal: an empty CALLCTL_GATE sends extensions.conf to its
                # "gate unavailable" branch, where an emergency call still gets Asterisk's own decision.
                variables = {"CALLCTL_GATE": "", "CALLCTL_GATE_RULE": "gate_unavailable",
                             "CALLCTL_GATE_REASON": "the gate could not decide"}
            for name, value in variables.items():
                await self._command(reader, writer, f"SET VARIABLE {name} {_quote(value)}")
        except BadSession as exc:
            self.refusals.refused(peer, str(exc))
        except (ConnectionError, OSError) as exc:
            self.refusals.refused(peer, "connection_lost", error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
