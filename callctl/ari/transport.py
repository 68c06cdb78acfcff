"""ARI REST requests carried over websockets (Asterisk 22.4+): a ``RESTRequest`` message out, a
``RESTResponse`` back on the same socket, among the events, matched by ``request_id``.

Asterisk serves one request at a time per socket, and a channel command waits until the channel has
carried it out, so requests are spread over a few sockets (the events socket and ``sockets - 1``
more, each registered as an app of its own that no channel enters): each request goes to the socket
with the fewest in flight. A request whose socket closes fails at once with AriUnavailable; one
with no answer within its timeout fails the same way. Nothing outside callctl/ari/ knows this.

Message shapes (Asterisk's res/ari/ari_websocket_requests.c): out ``{"type": "RESTRequest",
"request_id", "method", "uri": "channels/ID/answer", "query_strings": [{"name", "value"}],
"content_type": "application/json", "message_body": "<JSON text>"}``; back ``{"type":
"RESTResponse", "request_id", "status_code", "reason_phrase", "uri", "message_body"?}``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from callctl.errors import AriUnavailable
from callctl.logging import get_logger

log = get_logger("callctl.ari")


@dataclass(frozen=True)
class Answer:
    """What Asterisk answered to one request."""

    status: int
    reason: str
    body: bytes


class RequestSocket:
    """One websocket that carries requests, and the requests in flight on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.pending: dict[str, asyncio.Future[Answer]] = {}

    def resolve(self, raw: dict[str, Any]) -> None:
        """A RESTResponse arrived: hand it to the request waiting for it (none after its timeout)."""
        future = self.pending.pop(str(raw.get("request_id") or ""), None)
        if future is None or future.done():
            log.debug("ari_response_unclaimed", socket=self.name, request_id=raw.get("request_id"),
                      status=raw.get("status_code"), uri=raw.get("uri"))
            return
        body = raw.get("message_body")
        future.set_result(Answer(int(raw.get("status_code") or 0), str(raw.get("reason_phrase") or ""),
                                 body.encode() if isinstance(body, str) else b""))

    def fail_all(self, error: AriUnavailable) -> int:
        """The socket is gone: every request in flight on it fails now. Returns how many."""
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        return len(pending)


class WsRequests:
    """The request sockets of one ARI connection (attached as they open, dropped with it)."""

    def __init__(self, where: str) -> None:
        self._where = where
        self.sockets: list[RequestSocket] = []
        self._ids = itertools.count(1)

    def attach(self, sock: RequestSocket) -> None:
        self.sockets.append(sock)

    @property
    def in_flight(self) -> int:
        return sum(len(s.pending) for s in self.sockets)

    def fail_all(self, why: str) -> int:
        failed = 0
        for sock in self.sockets:
            failed += sock.fail_all(AriUnavailable(f"ARI at {self._where}: {why} with the request in flight"))
        self.sockets = []
        return failed

    async def request(self, method: str, path: str, *, params: dict[str, str] | None, json_body: Any,
                      timeout_s: float) -> Answer:
        if not self.sockets:
            raise AriUnavailable(f"not connected to Asterisk ARI at {self._where}")
        sock = min(self.sockets, key=lambda s: len(s.pending))
        request_id = str(next(self._ids))
        message: dict[str, Any] = {"type": "RESTRequest", "request_id": request_id, "method": method, "uri": path}
        if params:
            message["query_strings"] = [{"name": k, "value": v} for k, v in params.items()]
        if json_body is not None:
            message["content_type"] = "application/json"
            message["message_body"] = orjson.dumps(json_body).decode()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        sock.pending[request_id] = future
        try:
            await sock.ws.send_str(orjson.dumps(message).decode())
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise AriUnavailable(f"ARI {method} {path} at {self._where}: no answer within {timeout_s:g} s") from None
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            raise AriUnavailable(f"ARI {method} {path} at {self._where} failed: {exc or type(exc).__name__}") from None
        finally:
            sock.pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a failure that raced a timeout is not reported as lost
