"""ARI REST requests carried over websockets (Asterisk 22.4+): a ``RESTRequest`` message out, a
``RESTResponse`` back on the same socket, matched by ``request_id``.

Requests travel on sockets of their own, never on the events socket: each is registered as an app of
its own that no channel enters. Asterisk serves one request at a time per socket, in order, and a
channel command waits until the channel has carried it out (a variable set while a prompt plays waits
for the end of the prompt), so:

- a request goes to the socket with the fewest unanswered requests, never to one whose current
  request has been served for over ``STALLED_S`` (a held command then delays nobody queued behind
  it); when every socket is held that way (``ready`` is false), requests take HTTP, where Asterisk
  serves each on its own;
- request sockets are not pinged: Asterisk reads a socket's frames in the thread that carries out its
  requests, so a ping waits behind a held command and an unanswered heartbeat would close a healthy
  socket. Each request has its own timeout instead; the events socket keeps its heartbeat;
- a request whose socket closes fails at once with AriUnavailable; one with no answer within its
  timeout fails the same way (its late answer, if any, is dropped). Nothing outside callctl/ari/
  knows any of this.

Message shapes (Asterisk's res/ari/ari_websocket_requests.c): out ``{"type": "RESTRequest",
"request_id", "method", "uri": "channels/ID/answer", "query_strings": [{"name", "value"}],
"content_type": "application/json", "message_body": "<JSON text>"}``; back ``{"type":
"RESTResponse", "request_id", "status_code", "reason_phrase", "uri", "message_body"?}``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from callctl.errors import AriUnavailable
from callctl.logging import Throttle, get_logger

log = get_logger("callctl.ari")
_slow_lines = Throttle()

# A socket whose current request has been in Asterisk's hands this long is held by its channel (a
# normal request takes a few milliseconds, a loaded machine's tens): other sockets go first.
STALLED_S = 0.25
# A request answered later than this is logged (``ari_request_slow``) with where its time went: queued
# behind earlier requests on its socket, or served by Asterisk (its channel, its thread) for that long.
SLOW_S = 0.02


@dataclass(frozen=True)
class Answer:
    """What Asterisk answered to one request."""

    status: int
    reason: str
    body: bytes
    answered_at: float = 0.0  # time.monotonic() when the answer was read
    previous_at: float = 0.0  # ... and when the answer before it on the same socket was (Asterisk then began this one)


class RequestSocket:
    """One websocket that carries requests, and the requests in flight on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.pending: dict[str, asyncio.Future[Answer]] = {}
        # Sent and not answered yet, timed-out requests included: Asterisk still serves them in order.
        self.unanswered = 0
        self.serving_since = 0.0  # loop time Asterisk started on the current request (last answer or send)
        self.answered_at = 0.0  # time.monotonic() of the last answer read on this socket

    def sent(self, now: float) -> None:
        if self.unanswered == 0:
            self.serving_since = now
        self.unanswered += 1

    def stalled(self, now: float) -> bool:
        return self.unanswered > 0 and now - self.serving_since > STALLED_S

    def resolve(self, raw: dict[str, Any], now: float) -> None:
        """A RESTResponse arrived: hand it to the request waiting for it (none after its timeout)."""
        self.unanswered = max(0, self.unanswered - 1)
        self.serving_since = now
        previous, self.answered_at = self.answered_at, time.monotonic()
        future = self.pending.pop(str(raw.get("request_id") or ""), None)
        if future is None or future.done():
            log.debug("ari_response_unclaimed", socket=self.name, request_id=raw.get("request_id"),
                      status=raw.get("status_code"), uri=raw.get("uri"))
            return
        body = raw.get("message_body")
        future.set_result(Answer(int(raw.get("status_code") or 0), str(raw.get("reason_phrase") or ""),
                                 body.encode() if isinstance(body, str) else b"", self.answered_at, previous))

    def fail_all(self, error: AriUnavailable) -> int:
        """The socket is gone: every request in flight on it fails now. Returns how many."""
        pending, self.pending = self.pending, {}
        self.unanswered = 0
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        return len(pending)


class WsRequests:
    """The request sockets of one ARI connection: attached as they open, detached as they close (and
    attached again when reopened), all dropped with the connection."""

    def __init__(self, where: str) -> None:
        self._where = where
        self.sockets: list[RequestSocket] = []
        self._ids = itertools.count(1)

    def attach(self, sock: RequestSocket) -> None:
        self.sockets.append(sock)

    def detach(self, sock: RequestSocket, why: str) -> int:
        """The socket closed: it takes no more requests and those in flight on it fail. Returns how many."""
        if sock in self.sockets:
            self.sockets.remove(sock)
        return sock.fail_all(AriUnavailable(f"ARI at {self._where}: {why} with the request in flight"))

    def ready(self, now: float) -> bool:
        """True when some socket can take a request now: open, and not held by a channel."""
        return any(not s.stalled(now) for s in self.sockets)

    @property
    def in_flight(self) -> int:
        return sum(len(s.pending) for s in self.sockets)

    def fail_all(self, why: str) -> int:
        failed = 0
        for sock in list(self.sockets):
            failed += self.detach(sock, why)
        return failed

    def _pick(self, now: float) -> RequestSocket:
        best = self.sockets[0]
        best_key = (best.stalled(now), best.unanswered)
        for sock in self.sockets[1:]:
            key = (sock.stalled(now), sock.unanswered)
            if key < best_key:
                best, best_key = sock, key
        return best

    async def request(self, method: str, path: str, *, params: dict[str, str] | None, json_body: Any,
                      timeout_s: float) -> Answer:
        if not self.sockets:
            raise AriUnavailable(f"not connected to Asterisk ARI at {self._where}")
        loop = asyncio.get_running_loop()
        sock = self._pick(loop.time())
        request_id = str(next(self._ids))
        message: dict[str, Any] = {"type": "RESTRequest", "request_id": request_id, "method": method, "uri": path}
        if params:
            message["query_strings"] = [{"name": k, "value": v} for k, v in params.items()]
        if json_body is not None:
            message["content_type"] = "application/json"
            message["message_body"] = orjson.dumps(json_body).decode()
        future: asyncio.Future[Answer] = loop.create_future()
        sock.pending[request_id] = future
        ahead = sock.unanswered
        sock.sent(loop.time())  # before the send: its answer may be read while the send waits to drain
        sent_at = time.monotonic()
        try:
            try:
                await sock.ws.send_frame(orjson.dumps(message), aiohttp.WSMsgType.TEXT)  # no str round trip
            except BaseException:
                sock.unanswered = max(0, sock.unanswered - 1)  # not sent: Asterisk will not answer it
                raise
            async with asyncio.timeout(timeout_s):
                answer = await future
            if answer.answered_at - sent_at > SLOW_S:
                _log_slow(method, path, sock.name, ahead, sent_at, answer)
            return answer
        except TimeoutError:
            raise AriUnavailable(f"ARI {method} {path} at {self._where}: no answer within {timeout_s:g} s") from None
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            raise AriUnavailable(f"ARI {method} {path} at {self._where} failed: {exc or type(exc).__name__}") from None
        finally:
            sock.pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a failure that raced a timeout is not reported as lost


def _log_slow(method: str, path: str, socket: str, ahead: int, sent_at: float, answer: Answer) -> None:
    """Where a slow request's time went: ``queued_ms`` waiting for the ``ahead`` requests sent before it
    on its socket (Asterisk serves them in order), ``served_ms`` from then to its answer being read (its
    channel carrying it out, Asterisk's thread, or this engine's loop late to read it)."""
    if not _slow_lines.allow():
        return
    began = max(sent_at, answer.previous_at) if ahead else sent_at
    log.warning("ari_request_slow", unlogged=_slow_lines.unlogged(), method=method, uri=path, socket=socket,
                ahead=ahead,
                ms=round((answer.answered_at - sent_at) * 1000, 1), queued_ms=round((began - sent_at) * 1000, 1),
                served_ms=round((answer.answered_at - began) * 1000, 1), status=answer.status)
