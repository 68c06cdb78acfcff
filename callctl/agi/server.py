"""A small hardened FastAGI server (own reader, not panoramisk's: see FIELD-NOTES).

Bounded header size and count, a per-read timeout and a whole-header deadline (slow loris), non-UTF-8
tolerated (replaced), peers checked against an allow-list, bad sessions logged per peer and interval
with counts (refusals.py: a flood is not a log flood). The handler returns the channel variables to
set with ``SET VARIABLE``.

Each connection is an ``asyncio.Protocol`` that parses the header block as its bytes arrive (no task,
no stream objects, one timer for the headers, the handler's deadline and each reply); once the block
is complete, one task owned here runs the handler; its answer is sent from there, one command per
reply (Asterisk's AGI reads one command at a time: pipelining them is not safe), all in one
``EXEC MSet`` when the peer is Asterisk (``variable_commands``), each reply taken by the protocol's
own callbacks (no task waits for it). This keeps the server's CPU per request low enough for a gate
every outbound call passes through (issue 17, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import structlog

# The command encoding lives in commands.py; its limits and quoting stay importable from here as before.
from callctl.agi.commands import MSET_MAX_LINE as MSET_MAX_LINE
from callctl.agi.commands import MSET_MAX_PAIRS as MSET_MAX_PAIRS
from callctl.agi.commands import _quote as _quote
from callctl.agi.commands import variable_commands
from callctl.agi.refusals import RefusalTally

log = structlog.get_logger("callctl.agi")

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 128
MAX_LINE_BYTES = 8 * 1024
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
ACCEPT_BACKLOG = 1024
PEER_VERDICTS_MAX = 4096  # peer addresses whose allow-list verdict is kept (beyond: forgotten, judged anew)


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


ROUTE_CACHE_SIZE = 4096  # distinct (script, request URL) texts whose parse is kept: a few per account
ROUTE_CACHE_MAX_CHARS = 512  # longer texts are parsed each time, never kept


def _route(network_script: str, request_url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The script (the AGI URL's path) and its query parameters, from the two headers that carry them."""
    raw = network_script or urllib.parse.urlsplit(request_url).path
    split = urllib.parse.urlsplit(raw)
    params = urllib.parse.parse_qsl(split.query)
    if not params:
        params = urllib.parse.parse_qsl(urllib.parse.urlsplit(request_url).query)
    return split.path.strip("/"), tuple(params)


_cached_route = functools.lru_cache(maxsize=ROUTE_CACHE_SIZE)(_route)


def parse_request(headers: Mapping[str, str], peer: str) -> AgiRequest:
    network_script, request_url = headers.get("agi_network_script", ""), headers.get("agi_request", "")
    # The same few texts on every call of an account: parsed once (a pure function, bounded cache).
    script, pairs = (_cached_route(network_script, request_url)
                     if len(network_script) + len(request_url) <= ROUTE_CACHE_MAX_CHARS
                     else _route(network_script, request_url))
    params = dict(pairs)
    args = []
    for i in range(1, 64):
        key = f"agi_arg_{i}"
        if key not in headers:
            break
        args.append(headers[key])
    return AgiRequest(headers=dict(headers), script=script, params=params, args=tuple(args), peer=peer)


class _Phase(enum.Enum):
    HEADERS = 1
    HANDLING = 2  # the handler's task runs
    COMMANDS = 3  # a command sent, its reply awaited (by data_received, no task)
    DONE = 4


class _Session(asyncio.Protocol):
    """One FastAGI connection (see the module docstring)."""

    __slots__ = ("_buffer", "_closed", "_deadline", "_handler_due", "_header_bytes", "_headers", "_line_since", "_loop",
                 "_peer", "_pending", "_phase", "_sent", "_server", "_task", "_timed_out", "_timer", "_transport",
                 "_variables")

    def __init__(self, server: AgiServer) -> None:
        self._server = server
        self._loop = server.loop  # not asyncio.get_running_loop(): a system call (getpid) per connection
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._buffer = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._phase = _Phase.HEADERS
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # loop time: the whole header block by then
        self._line_since: float | None = None  # loop time the wait for the current line began; None: not waiting
        self._handler_due = 0.0  # loop time: the handler's answer by then
        self._task: asyncio.Task[None] | None = None  # the handler's
        self._timed_out = False  # the handler's task was cancelled for its deadline
        self._variables: Mapping[str, str] = {}  # the handler's answer
        self._pending: list[bytes] = []  # commands not sent yet
        self._sent: bytes | None = None  # the command whose reply is awaited
        self._closed = False

    # -- transport callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._server._live.add(self)
        peername = transport.get_extra_info("peername")
        self._peer = str(peername[0]) if peername else "?"
        if not self._server._peer_allowed(self._peer):
            self._refuse("peer_not_allowed")
            return
        now = self._loop.time()
        self._deadline = now + self._server.header_timeout_s
        self._line_since = now
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.DONE:
            return
        self._buffer += data
        if self._phase is _Phase.HEADERS:
            self._parse_headers()
        elif self._phase is _Phase.COMMANDS:
            self._take_replies()

    def eof_received(self) -> bool | None:
        return None  # close: a peer that stops sending is done (Asterisk never half-closes)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._live.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reason = "closed_mid_header" if self._buffer else "closed"
        if self._phase is _Phase.HEADERS:
            self._refuse(reason)
        elif self._phase is _Phase.COMMANDS:
            self._end(reason)

    # -- timers: one handle per session, re-armed only when it fires early ---------------------
    # The same handle bounds the header block, the handler (handler_timeout_s: the task is cancelled, as
    # asyncio.timeout would, without a timeout context and its own timer per session) and each reply.
    def _arm(self) -> None:
        if self._phase is _Phase.HANDLING:
            due = self._handler_due
        elif self._line_since is None:
            return
        else:
            due = self._line_since + self._server.read_timeout_s
            if self._phase is _Phase.HEADERS:
                due = min(due, self._deadline)
        if self._timer is not None:
            if self._timer.when() <= due:
                return  # it fires first, finds nothing due yet, and arms again
            self._timer.cancel()
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._phase is _Phase.HANDLING:
            if self._loop.time() < self._handler_due:
                self._arm()
            elif self._task is not None:
                self._timed_out = True
                self._task.cancel()
            return
        if self._phase is _Phase.DONE or self._line_since is None:
            return
        now = self._loop.time()
        if now - self._line_since >= self._server.read_timeout_s:
            self._fail("read_timeout")
        elif self._phase is _Phase.HEADERS and now >= self._deadline:
            self._fail("header_deadline")
        else:
            self._arm()

    def _fail(self, reason: str) -> None:
        if self._phase is _Phase.HEADERS:
            self._refuse(reason)
        elif self._phase is _Phase.COMMANDS:
            self._end(reason)

    def _refuse(self, reason: str) -> None:
        """A session refused before its handler ran."""
        if self._phase is _Phase.DONE:
            return
        self._phase = _Phase.DONE
        self._server.refusals.refused(self._peer, reason)
        self.close()

    def stop(self) -> None:
        """The server stops: close without counting a session cut in its command phase as refused."""
        if self._phase is _Phase.COMMANDS:
            self._phase = _Phase.DONE
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self._closed:
            self._transport.close()

    # -- the header block ----------------------------------------------------------------------
    def _parse_headers(self) -> None:
        if self._header_bytes == 0 and len(self._buffer) <= MAX_LINE_BYTES and self._parse_block():
            return
        buf = self._buffer
        start = 0
        headers = self._headers
        try:
            while (nl := buf.find(b"\n", start)) >= 0:
                if nl - start >= MAX_LINE_BYTES:
                    raise BadSession("line_too_long")
                self._header_bytes += nl + 1 - start
                if self._header_bytes > MAX_HEADER_BYTES:
                    raise BadSession("headers_too_large")
                text = buf[start:nl].decode("utf-8", "replace").rstrip("\r")
                start = nl + 1
                self._line_since = self._loop.time()
                if not text:
                    del buf[:start]
                    self._headers_done()
                    return
                if len(headers) >= MAX_HEADERS:
                    raise BadSession("too_many_headers")
                key, sep, value = text.partition(":")
                if not sep or not key.startswith("agi_"):
                    raise BadSession("malformed_header")
                headers[key.strip()] = value.strip()
            if len(buf) - start > MAX_LINE_BYTES:
                raise BadSession("line_too_long")
        except BadSession as exc:
            self._refuse(str(exc))
            return
        del buf[:start]

    def _parse_block(self) -> bool:
        """The whole header block arrived in one read, as Asterisk sends it: parsed in one pass. False (and
        nothing changed) for anything else, which the line-by-line parse takes with its exact reasons: no
        empty line yet (CRLF line ends included), more lines than MAX_HEADERS, a malformed line. Within
        MAX_LINE_BYTES no line is too long and the block is not too large; a carriage return ending a
        value goes with ``strip()`` as it goes with the line parse's ``rstrip``."""
        buf = self._buffer
        end = buf.find(b"\n\n")
        if end <= 0:
            return False
        lines = buf[:end].decode("utf-8", "replace").split("\n")
        if len(lines) > MAX_HEADERS:
            return False
        headers = {}
        for line in lines:
            key, sep, value = line.partition(":")
            if not sep or not key.startswith("agi_"):
                return False
            headers[key.strip()] = value.strip()
        self._headers = headers
        self._header_bytes = end + 2
        del buf[:end + 2]
        self._headers_done()
        return True

    def _headers_done(self) -> None:
        self._phase = _Phase.HANDLING
        # The handler's time is bounded by handler_timeout_s, not by reads (the session's timer, _arm).
        self._line_since = None
        request = parse_request(self._headers, self._peer)
        self._handler_due = self._loop.time() + self._server.handler_timeout_s
        self._task = task = self._loop.create_task(self._run(request))
        self._server._sessions.add(task)
        task.add_done_callback(self._handler_ended)
        self._arm()

    def _handler_ended(self, task: asyncio.Task[None]) -> None:
        self._server._sessions.discard(task)
        self._task = None
        if task.cancelled() and self._phase is _Phase.HANDLING:  # cancelled before its first step
            self._phase = _Phase.DONE
            self.close()

    # -- the handler and its commands ----------------------------------------------------------
    async def _run(self, request: AgiRequest) -> None:
        server = self._server
        try:
            try:
                try:
                    variables = await server.handler(request)
                except asyncio.CancelledError:
                    if not self._timed_out or self._task is None:
                        raise  # the server stops
                    self._task.uncancel()
                    raise TimeoutError() from None
            except Exception as exc:  # a handler bug must not leave the channel without an answer
                log.error("agi_handler_failed", peer=self._peer, script=request.script, error=repr(exc))
                # No decision is not a refusal: an empty CALLCTL_GATE sends extensions.conf to its
                # "gate unavailable" branch, where an emergency call still gets Asterisk's own decision.
                variables = {"CALLCTL_GATE": "", "CALLCTL_GATE_RULE": "gate_unavailable",
                             "CALLCTL_GATE_REASON": "the gate could not decide"}
        except BaseException:  # cancelled: the server stops
            self._phase = _Phase.DONE
            self.close()
            raise
        if self._closed:
            self._end("closed")
            return
        # A peer that names its Asterisk version (every Asterisk does) gets MSet; any other the plain
        # command every AGI peer knows. From here the protocol's callbacks carry the session.
        self._variables = variables
        self._pending = variable_commands(variables, mset="agi_version" in request.headers)
        self._phase = _Phase.COMMANDS
        self._send_next()

    def _send_next(self) -> None:
        """Send the next command and wait for its reply (``_take_replies``), or end the session."""
        if not self._pending:
            self._phase = _Phase.DONE
            self.close()
            return
        if self._closed or self._transport is None:
            self._end("closed")
            return
        self._sent = self._pending.pop(0)
        try:
            self._transport.write(self._sent)
        except (ConnectionError, OSError) as exc:
            self._end("connection_lost", error=str(exc))
            return
        self._line_since = self._loop.time()
        self._arm()
        if self._buffer:  # a reply already here (sent ahead of the command)
            self._take_replies()

    def _take_replies(self) -> None:
        while self._phase is _Phase.COMMANDS and self._sent is not None:
            try:
                line = self._pop_line()
            except BadSession as exc:
                self._end(str(exc))
                return
            if line is None:
                return
            self._replied(line)

    def _replied(self, reply: bytes) -> None:
        command, self._sent = self._sent, None
        self._line_since = None
        if not reply.startswith(b"200"):
            text = reply.decode("utf-8", "replace").strip()
            self._end(f"command_refused: {text[:80]}")
            return
        if command is not None and command.startswith(b"EXEC ") and not reply.startswith(b"200 result=0"):
            # No MSet application (result=-2): the same variables one by one, instead of what was left.
            self._pending = variable_commands(self._variables, mset=False)
        self._send_next()

    def _end(self, reason: str, **details: str) -> None:
        """The command phase cut short: counted as refused, closed."""
        if self._phase is _Phase.DONE:
            return
        self._phase = _Phase.DONE
        self._server.refusals.refused(self._peer, reason, **details)
        self.close()

    def _pop_line(self) -> bytes | None:
        nl = self._buffer.find(b"\n")
        if nl < 0 or nl >= MAX_LINE_BYTES:
            if nl >= MAX_LINE_BYTES or len(self._buffer) > MAX_LINE_BYTES:
                raise BadSession("line_too_long")
            return None
        line = bytes(self._buffer[:nl + 1])
        del self._buffer[:nl + 1]
        return line


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
        self._sessions: set[asyncio.Task[None]] = set()  # sessions whose handler runs
        self._live: set[_Session] = set()  # every open connection
        self._peer_verdicts: dict[str, bool] = {}  # peer address -> allowed (the allow-list never changes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refusals = refusals if refusals is not None else RefusalTally()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("AgiServer is not started")
        return self._loop

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("AgiServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> AgiServer:
        self._loop = loop = asyncio.get_running_loop()
        # A deep accept queue: a burst of calls connecting at once waits a moment instead of failing over to
        # the dialplan's "gate unavailable" branch (the default backlog is 100).
        self._server = await loop.create_server(lambda: _Session(self), self.host, self.requested_port,
                                                backlog=ACCEPT_BACKLOG)
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
        for session in list(self._live):
            session.stop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
        self.refusals.close()

    def _peer_allowed(self, host: str) -> bool:
        """Whether ``host`` (a peer address as the socket gives it) is in the allow-list; judged once per
        address (Asterisk connects from the same few), at most PEER_VERDICTS_MAX addresses kept."""
        verdict = self._peer_verdicts.get(host)
        if verdict is None:
            verdict = self._judge_peer(host)
            if len(self._peer_verdicts) >= PEER_VERDICTS_MAX:
                self._peer_verdicts.clear()
            self._peer_verdicts[host] = verdict
        return verdict

    def _judge_peer(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        return any(addr in net for net in self.allow)
