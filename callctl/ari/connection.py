"""The one owner of the ARI connection: aioari connects (and checks the API and credentials), events
arrive through our own websocket reader, REST requests travel over websockets of their own (Asterisk
22.4+, callctl.ari.transport; ``ari_rest_transport: http``, an Asterisk that does not answer there, or
every request socket held by a channel command: aioari's HTTP session). A recording's file is always
fetched over HTTP (Asterisk serves files only there). The resource methods are in callctl.ari.client.

- ``run_forever`` connects, subscribes the Stasis app, filters out event types nobody uses,
  resynchronises (``on_connected``), then reads events and hands each one, decoded, to ``on_event``
  (synchronous: the reader never awaits business logic). When the events socket drops, goes silent
  (heartbeat) or Asterisk restarts, it reconnects with capped exponential backoff. A lost request
  socket is reopened alone.
- Every REST answer is translated here (``_interpret``): 404 on a channel -> ChannelGone (on a
  bridge, recording or playback: BridgeGone, RecordingGone, PlaybackGone, as the caller says),
  connection problems -> AriUnavailable, 401 -> AriAuthError. No aiohttp or aioari type leaves
  callctl.ari.

aioari's own ``run()`` is not used: it awaits each listener inside its websocket loop and returns
silently when the socket closes (FIELD-NOTES).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Self

import aioari
import aiohttp
import orjson
from aiohttp import web_exceptions
from aioswagger11.http_client import ApiKeyAuthenticator, AsynchronousHttpClient

from callctl.ari.events import DECODED_TYPES, ChannelEvent, Event, StasisEnd, StasisStart, decode
from callctl.ari.transport import SLOW_S, RequestSocket, WsRequests
from callctl.config import Settings
from callctl.errors import AriAuthError, AriError, AriUnavailable, ResourceGone
from callctl.logging import Throttle, get_logger

log = get_logger("callctl.ari")
_answer_lines = Throttle()
_http_slow_lines = Throttle()

DEFAULT_TIMEOUT_S = 10.0  # a REST request's whole round trip
PROBE_TIMEOUT_S = 3.0  # the first request over the websocket: no answer -> this Asterisk takes HTTP only
REQUEST_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
ARRIVALS_KEPT = 10_000  # channels whose StasisStart was read and that were not answered yet (a bound)


class AriConnection:
    """One ARI connection kept up for the life of the engine: the events socket, the request sockets,
    reconnection and resynchronisation, and ``_request``, the one way any request travels."""

    def __init__(
        self,
        settings: Settings,
        on_event: Callable[[Event], None],
        on_connected: Callable[[], Awaitable[None]],
        on_disconnected: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._client: Any = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._keepers: list[asyncio.Task[None]] = []  # one per request socket: reads it, reopens it when lost
        self._requests: WsRequests | None = None  # the request sockets of this connection
        self._use_http = settings.ari_rest_transport == "http"  # or this Asterisk does not answer on websockets
        self._side_sockets: set[aiohttp.ClientWebSocketResponse] = set()  # request sockets open now
        self._all_held = False  # every request socket held by a channel command: requests take HTTP
        self._held: list[Event] | None = None  # events read while resynchronising, delivered after it
        self._closing = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        base = settings.ari_url if settings.ari_url.endswith("/") else settings.ari_url + "/"
        self._base = base
        self._where = urllib.parse.urlparse(base).netloc
        # Built once: a BasicAuth and a ClientTimeout per request showed in the profile.
        token = base64.b64encode(f"{settings.ari_user}:{settings.ari_password}".encode("latin1")).decode()
        self._auth = {"Authorization": f"Basic {token}"}  # aiohttp.BasicAuth is deprecated in aiohttp 3.13
        self._timeout = aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT_S)
        self._request_timeout_s = settings.ari_request_timeout_s
        # time.monotonic() each channel's StasisStart was read, until its answer (``ari_answer_slow``).
        self._arrived: dict[str, float] = {}
        self._late = _LateEvents()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self.run_forever(), name="ari-connection")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect (Asterisk then unregisters the app: new calls take the dialplan fallback)."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        await self._drop_client()

    async def _drop_client(self) -> None:
        self._fail_requests("the connection closed")
        readers, self._keepers = self._keepers, []
        if self._reader is not None:
            readers.append(self._reader)
            self._reader = None
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_sockets()
        self._ws = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def run_forever(self) -> None:
        delay = self._settings.reconnect_min_s
        down_logged = False
        while not self._closing:
            try:
                try:
                    await self._connect()
                except AriError:
                    raise
                except Exception as exc:  # a bug in a resync handler must not end reconnection for good
                    log.exception("ari_connect_crashed", error=str(exc))
                    raise AriUnavailable(f"connecting to ARI at {self._where} failed: {_describe(exc)}") from None
            except AriError as exc:
                if not down_logged or exc.message != self.last_error:
                    log.error(exc.code, error=exc.message, retry_in_s=round(delay, 1))
                    down_logged = True
                self.last_error = exc.message
                await self._drop_client()
                await asyncio.sleep(delay * (0.8 + random.random() * 0.4))
                delay = min(delay * 2, self._settings.reconnect_max_s)
                continue
            rest = "http" if self._use_http else f"websocket x{self._settings.ari_rest_sockets}"
            if down_logged or self.reconnects:
                log.info("ari_connected", where=self._where, rest=rest, reconnects=self.reconnects)
            else:
                log.info("ari_connected", where=self._where, rest=rest)
            down_logged = False
            self.last_error = None
            delay = self._settings.reconnect_min_s
            try:
                assert self._reader is not None
                await self._reader
            except Exception as exc:  # a bug in the reader: reconnect rather than stop for good
                log.exception("ari_reader_crashed", error=str(exc))
            finally:
                self.connected.clear()
                self._on_disconnected()
                await self._drop_client()
            if not self._closing:
                self.reconnects += 1
                self.last_error = "events websocket closed"
                log.warning("ari_disconnected", where=self._where, retry_in_s=delay)
                down_logged = True
                await asyncio.sleep(delay)

    async def _connect(self) -> None:
        s = self._settings
        try:
            self._client = await self._new_client()
        except web_exceptions.HTTPUnauthorized:
            raise AriAuthError(f"Asterisk ARI at {self._where} refused user '{s.ari_user}': wrong user or "
                               "password (check ari.conf and CALLCTL_ARI_PASSWORD)") from None
        except (TimeoutError, aiohttp.ClientError, OSError, web_exceptions.HTTPException) as exc:
            raise AriUnavailable(f"Asterisk ARI at {self._where} is unreachable: {_describe(exc)}; "
                                 "is Asterisk running with http.conf enabled?") from None
        except Exception as exc:  # aioswagger raises plain errors on a half-started Asterisk
            raise AriUnavailable(f"Asterisk ARI at {self._where} answered unexpectedly: {_describe(exc)}") from None
        ws_url = self._base.replace("http", "ws", 1) + "ari/events?" + urllib.parse.urlencode(
            {"app": s.ari_app, "subscribeAll": "false"})
        token = base64.b64encode(f"{s.ari_user}:{s.ari_password}".encode()).decode()
        session: aiohttp.ClientSession = self._client.swagger.http_client.session
        try:
            # heartbeat: a ping every N s; no pong in time closes the socket -> reconnect.
            self._ws = await session.ws_connect(ws_url, headers={"Authorization": f"Basic {token}"},
                                                heartbeat=s.ari_heartbeat_s, max_msg_size=16 * 1024 * 1024)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise AriAuthError(f"Asterisk ARI at {self._where} refused the events websocket for "
                                   f"'{s.ari_user}': wrong password") from None
            raise AriUnavailable(f"ARI events websocket at {self._where} refused: HTTP {exc.status}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"ARI events websocket at {self._where} failed: {_describe(exc)}") from None
        # Read from now on. Events read before the resynchronisation ends are held, then delivered in
        # order (as if left in the socket).
        self._held = []
        self._reader = asyncio.create_task(self._read_events(self._ws), name="ari-events")
        self._use_http = s.ari_rest_transport == "http"
        if not self._use_http:
            self._requests = WsRequests(self._where)
            for n in range(1, s.ari_rest_sockets + 1):
                sock = RequestSocket(await self._open_request_socket(session, f"{s.ari_app}-rest{n}", token),
                                     f"{s.ari_app}-rest{n}")
                self._requests.attach(sock)  # now: the first request below may take it
                self._keepers.append(asyncio.create_task(self._keep_request_socket(session, sock, token),
                                                         name=f"ari-rest{n}"))
        # Only the types decode() uses: Asterisk then neither encodes nor sends the others
        # (ChannelVarset floods, and PlaybackStarted, ChannelEnteredBridge/LeftBridge, Bridge*).
        # RESTResponse is filtered like an event: kept, or no answer would reach a request sent here.
        # The first request on the request sockets: no answer means an Asterisk before 22.4.
        allowed = {"allowed": [{"type": t} for t in (*DECODED_TYPES, "RESTResponse")]}
        try:
            await self._request("PUT", f"applications/{s.ari_app}/eventFilter", json_body=allowed,
                                timeout_s=min(PROBE_TIMEOUT_S, self._request_timeout_s))
        except AriUnavailable as exc:
            requests = self._requests
            if self._use_http or not self._ws_alive() or requests is None or \
                    len(requests.sockets) < s.ari_rest_sockets:  # a socket closed: not a silent Asterisk
                raise
            # An Asterisk before 22.4 ignores requests on the websocket: HTTP for this connection.
            log.warning("ari_rest_over_websocket_unavailable", where=self._where, error=exc.message)
            self._use_http = True
            await self._close_request_sockets()
            with contextlib.suppress(AriError):
                await self._request("PUT", f"applications/{s.ari_app}/eventFilter", json_body=allowed)
        except AriError as exc:  # older Asterisk: no filter, just more events
            log.warning("ari_event_filter_refused", error=exc.message)
        self.connected.set()
        # Resynchronise before delivering events: channels that arrived meanwhile are adopted by the handler.
        await self._on_connected()
        held, self._held = self._held, None
        for event in held or ():
            self._on_event(event)

    async def _open_request_socket(self, session: aiohttp.ClientSession, app: str,
                                   token: str) -> aiohttp.ClientWebSocketResponse:
        """One socket for requests, registered as an app no channel enters (Asterisk needs one). No
        heartbeat: Asterisk reads its frames in the thread that carries out its requests, so a ping waits
        behind a command held by its channel (a variable set during a prompt) and the socket would be
        closed for no fault; each request's timeout covers it. Its close handshake is bounded for the
        same reason (a held command delays Asterisk's answer to it)."""
        url = self._base.replace("http", "ws", 1) + "ari/events?" + urllib.parse.urlencode(
            {"app": app, "subscribeAll": "false"})
        try:
            ws = await session.ws_connect(url, headers={"Authorization": f"Basic {token}"}, heartbeat=None,
                                          timeout=REQUEST_WS_TIMEOUT, max_msg_size=16 * 1024 * 1024)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"ARI request websocket {app} at {self._where} failed: {_describe(exc)}") from None
        self._side_sockets.add(ws)
        return ws

    async def _keep_request_socket(self, session: aiohttp.ClientSession, sock: RequestSocket, token: str) -> None:
        """One request socket for the life of the connection: its answers to their requests; when it is
        lost, its own requests in flight fail at once and it is reopened alone, with backoff (meanwhile
        requests take the other sockets, or HTTP). The connection, its events and the other sockets'
        requests are untouched: no reconnect, no resynchronisation. Cancelled when the connection drops."""
        requests = self._requests
        assert requests is not None
        app = sock.name
        while True:
            ws = sock.ws
            try:
                await self._read_responses(sock)
            finally:
                failed = requests.detach(sock, f"request websocket {app} closed")
            self._side_sockets.discard(ws)
            with contextlib.suppress(Exception):
                await ws.close()
            if self._closing or not self._ws_alive():
                return  # the whole connection is going: run_forever reconnects it
            log.warning("ari_request_socket_closed", where=self._where, socket=app, in_flight=failed)
            delay = self._settings.reconnect_min_s
            down_logged = False
            while True:
                try:
                    ws = await self._open_request_socket(session, app, token)
                    break
                except AriUnavailable as exc:
                    if not down_logged:
                        log.error("ari_request_socket_unavailable", where=self._where, socket=app,
                                  error=exc.message)
                        down_logged = True
                    await asyncio.sleep(delay * (0.8 + random.random() * 0.4))
                    delay = min(delay * 2, self._settings.reconnect_max_s)
            sock = RequestSocket(ws, app)
            requests.attach(sock)
            log.info("ari_request_socket_reopened", where=self._where, socket=app)

    async def _close_request_sockets(self) -> None:
        """This connection takes HTTP after all: the request sockets close (nothing is in flight on them)."""
        self._fail_requests("falling back to HTTP")
        keepers, self._keepers = self._keepers, []
        for task in keepers:
            task.cancel()
        for task in keepers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_sockets()

    async def _close_sockets(self) -> None:
        """The request sockets close, together: a close handshake waits (up to 1 s) behind a held command."""
        sockets, self._side_sockets = self._side_sockets, set()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    def _ws_ready(self, requests: WsRequests) -> bool:
        """A request socket can take a request now. If not (every one held by a channel command, or
        none open for a moment, one being reopened), the request takes HTTP."""
        if requests.ready(asyncio.get_running_loop().time()):
            if self._all_held:
                self._all_held = False
                log.info("ari_request_sockets_free", where=self._where)
            return True
        if not self._all_held and requests.sockets:
            self._all_held = True
            log.info("ari_request_sockets_held", where=self._where, sockets=len(requests.sockets),
                        unanswered=sum(s.unanswered for s in requests.sockets), meanwhile="http")
        return False

    def _ws_alive(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def _fail_requests(self, why: str) -> None:
        requests, self._requests = self._requests, None
        if requests is not None:
            failed = requests.fail_all(why)
            if failed:
                log.warning("ari_requests_failed", where=self._where, in_flight=failed, reason=why)

    async def _new_client(self) -> Any:
        """aioari's client (``aioari.connect`` without its leak): the HTTP session it opens is closed when
        the start-up requests fail, e.g. while Asterisk restarts (else one session per failed attempt,
        each reported by asyncio as 'Unclosed client session')."""
        s = self._settings
        host = urllib.parse.urlparse(self._base).netloc.split(":")[0]
        http_client = AsynchronousHttpClient(auth=ApiKeyAuthenticator(host, f"{s.ari_user}:{s.ari_password}"))
        client = aioari.Client(self._base, http_client)
        try:
            await client.init()
        except BaseException:
            with contextlib.suppress(Exception):
                await http_client.close()
            raise
        return client

    async def _read_events(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The events socket (events only, no requests): events to ``on_event`` (held while
        resynchronising). When it closes, every request in flight fails and the connection drops."""
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        raw = orjson.loads(msg.data)
                    except orjson.JSONDecodeError:
                        log.warning("ari_event_undecodable", size=len(msg.data))
                        continue
                    if not isinstance(raw, dict):
                        continue
                    event = decode(raw)
                    if event is None:
                        continue
                    self._note_arrival(event)
                    if self._held is not None:
                        self._held.append(event)
                    else:
                        self._on_event(event)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
        finally:
            self._fail_requests("the events websocket closed")

    def _note_arrival(self, event: Event) -> None:
        """How late the event reached this engine after Asterisk stamped it (``ari_event_late`` past
        SLOW_S: Asterisk's own queue, the socket, or this loop busy), and when a channel arrived."""
        late_s = (dt.datetime.now(dt.UTC) - event.at).total_seconds()
        channel: str
        if isinstance(event, StasisStart):
            arrived = self._arrived
            if len(arrived) >= ARRIVALS_KEPT:
                del arrived[next(iter(arrived))]
            arrived[event.channel.id] = time.monotonic()
            channel = event.channel.id
        elif isinstance(event, ChannelEvent):
            channel = event.channel_id
            if isinstance(event, StasisEnd):
                self._arrived.pop(channel, None)
        else:
            channel = ""
        if late_s > SLOW_S:
            self._late.add(late_s, type(event).__name__, channel)

    def _answer_timed(self, channel_id: str, sent_at: float) -> None:
        """A channel was answered: if its StasisStart was read here over SLOW_S before, say where the time
        went (``engine_ms``: from reading the event to sending the answer; ``request_ms``: the request)."""
        arrived = self._arrived.pop(channel_id, None)
        done = time.monotonic()
        if arrived is not None and done - arrived > SLOW_S and _answer_lines.allow():
            log.warning("ari_answer_slow", unlogged=_answer_lines.unlogged(), channel=channel_id,
                        ms=round((done - arrived) * 1000, 1),
                        engine_ms=round((sent_at - arrived) * 1000, 1), request_ms=round((done - sent_at) * 1000, 1))

    async def _read_responses(self, sock: RequestSocket) -> None:
        """Until the request socket closes: the answers to its requests."""
        loop = asyncio.get_running_loop()
        async for msg in sock.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                with contextlib.suppress(orjson.JSONDecodeError):
                    raw = orjson.loads(msg.data)
                    if isinstance(raw, dict) and raw.get("type") == "RESTResponse":
                        sock.resolve(raw, loop.time())
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break

    # -- REST ----------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       json_body: Any = None, gone: tuple[type[ResourceGone], str] | None = None, raw: bool = False,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        """One ARI REST call through aioari's HTTP session (shared connection pool); ``raw``: the
        body as bytes (a recording's file) instead of decoded JSON. ``gone``: (error, what) raised on a
        404, the object the request is about no longer exists."""
        if self._client is None:
            raise AriUnavailable(f"not connected to Asterisk ARI at {self._where}")
        requests = None if self._use_http or raw else self._requests
        if requests is None and not self._use_http and not raw:
            raise AriUnavailable(f"not connected to Asterisk ARI at {self._where} (events websocket closed)")
        if requests is not None and self._ws_ready(requests):
            ws_timeout_s = self._request_timeout_s if timeout_s == DEFAULT_TIMEOUT_S else timeout_s
            answer = await requests.request(method, path, params=params, json_body=json_body,
                                            timeout_s=ws_timeout_s)
            return self._interpret(method, path, answer.status, answer.body, gone)
        session: aiohttp.ClientSession = self._client.swagger.http_client.session
        timeout = self._timeout if timeout_s == DEFAULT_TIMEOUT_S else aiohttp.ClientTimeout(total=timeout_s)
        sent_at = time.monotonic()
        try:
            async with session.request(method, self._base + "ari/" + path, params=params, json=json_body,
                                       headers=self._auth, timeout=timeout) as resp:
                body = await resp.read()
                if time.monotonic() - sent_at > SLOW_S and not raw and _http_slow_lines.allow():
                    log.warning("ari_request_slow", unlogged=_http_slow_lines.unlogged(), method=method, uri=path,
                                socket="http",
                                ms=round((time.monotonic() - sent_at) * 1000, 1), status=resp.status)
                if raw and resp.status < 400:
                    return body
                return self._interpret(method, path, resp.status, body, gone)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"ARI {method} {path} at {self._where} failed: {_describe(exc)}") from None

    def _interpret(self, method: str, path: str, status: int, body: bytes,
                   gone: tuple[type[ResourceGone], str] | None) -> Any:
        """Asterisk's answer, the same over HTTP and over the websocket: errors translated, JSON decoded."""
        if status == 404 and gone is not None:
            error, what = gone
            raise error(f"{what} no longer exists ({method} {path})")
        if status == 401:
            raise AriAuthError(f"ARI at {self._where} refused credentials for {method} {path}")
        if status >= 400:
            text = body.decode("utf-8", "replace").strip()[:200]
            raise AriError(f"ARI {method} {path} failed: HTTP {status} {text}")
        return orjson.loads(body) if body else None


class _LateEvents:
    """Events read over SLOW_S after Asterisk stamped them, said at most once a second while it lasts
    (``ari_events_late``: how many in that second, the latest one's lateness, type and channel)."""

    def __init__(self) -> None:
        self._logged_at = float("-inf")
        self._count = 0
        self._worst_s = 0.0

    def add(self, late_s: float, kind: str, channel: str) -> None:
        """One late event: said at once after a quiet second, else counted into the next line."""
        now = time.monotonic()
        self._count += 1
        self._worst_s = max(self._worst_s, late_s)
        if now - self._logged_at >= 1.0:
            log.warning("ari_events_late", events=self._count, worst_ms=round(self._worst_s * 1000, 1),
                        late_ms=round(late_s * 1000, 1), type=kind, channel=channel)
            self._logged_at, self._count, self._worst_s = now, 0, 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
