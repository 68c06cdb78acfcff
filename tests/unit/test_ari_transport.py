"""ARI requests over websockets (callctl.ari.transport) against a fake socket: matched by request_id in
any order, spread over the least busy socket, failed at once when their socket goes, failed after
their timeout when no answer comes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from callctl.ari.transport import STALLED_S, RequestSocket, WsRequests
from callctl.errors import AriError, AriUnavailable
from tests.support.waiting import wait_for_async


class FakeWs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    async def send_frame(self, data: bytes, opcode: aiohttp.WSMsgType) -> None:
        if self.closed:
            raise ConnectionResetError("Cannot write to closing transport")
        assert opcode == aiohttp.WSMsgType.TEXT  # Asterisk reads requests from text frames
        self.sent.append(orjson.loads(data))


def _pool(count: int) -> tuple[WsRequests, list[RequestSocket]]:
    requests = WsRequests("127.0.0.1:8088")
    socks = [RequestSocket(FakeWs(), f"s{n}") for n in range(count)]  # type: ignore[arg-type]
    for s in socks:
        requests.attach(s)
    return requests, socks


def _answer(sock: RequestSocket, index: int, status: int = 200, body: str | None = None) -> None:
    sent = sock.ws.sent[index]  # type: ignore[attr-defined]
    raw: dict[str, Any] = {"type": "RESTResponse", "request_id": sent["request_id"], "status_code": status,
                           "reason_phrase": "OK", "uri": sent["uri"]}
    if body is not None:
        raw["message_body"] = body
    sock.resolve(raw, asyncio.get_running_loop().time())


def test_requests_are_sent_as_rest_request_messages_and_answers_match_by_id_in_any_order() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)
        first = asyncio.create_task(requests.request("POST", "channels/c1/play/p1", params={"media": "sound:x"},
                                                     json_body=None, timeout_s=5))
        second = asyncio.create_task(requests.request("POST", "channels", params=None,
                                                      json_body={"variables": {"A": "1"}}, timeout_s=5))
        await wait_for_async(lambda: len(sock.ws.sent) == 2, "two requests sent")  # type: ignore[attr-defined]
        one, two = sock.ws.sent  # type: ignore[attr-defined]
        assert one["type"] == "RESTRequest" and one["method"] == "POST" and one["uri"] == "channels/c1/play/p1"
        assert one["query_strings"] == [{"name": "media", "value": "sound:x"}] and "message_body" not in one
        assert two["content_type"] == "application/json"
        assert orjson.loads(two["message_body"]) == {"variables": {"A": "1"}}
        assert one["request_id"] != two["request_id"]
        _answer(sock, 1, body='{"id": "c2"}')  # the second answered first
        _answer(sock, 0, status=404, body='{"message": "Channel not found"}')
        assert (await second).body == b'{"id": "c2"}' and (await first).status == 404
        assert not sock.pending

    asyncio.run(main())


def test_each_request_goes_to_the_socket_with_fewest_in_flight() -> None:
    async def main() -> None:
        requests, socks = _pool(3)
        tasks = [asyncio.create_task(requests.request("GET", f"channels/c{n}", params=None, json_body=None,
                                                      timeout_s=5)) for n in range(6)]
        await wait_for_async(lambda: requests.in_flight == 6, "six in flight")
        assert [len(s.pending) for s in socks] == [2, 2, 2]
        for s in socks:
            _answer(s, 0)
            _answer(s, 1)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_a_socket_that_closes_fails_its_requests_at_once_with_the_ari_error() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)
        task = asyncio.create_task(requests.request("POST", "channels/c1/answer", params=None, json_body=None,
                                                    timeout_s=3600))
        await wait_for_async(lambda: sock.pending, "in flight")
        assert requests.fail_all("the events websocket closed") == 1
        with pytest.raises(AriUnavailable, match="the events websocket closed with the request in flight"):
            await asyncio.wait_for(task, 5)  # not the hour of its own timeout
        with pytest.raises(AriUnavailable, match="not connected"):  # no socket left: fails, never waits
            await requests.request("GET", "bridges", params=None, json_body=None, timeout_s=3600)

    asyncio.run(main())


def test_a_request_sent_on_a_closing_socket_fails_with_the_ari_error() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)
        sock.ws.closed = True  # type: ignore[attr-defined]
        with pytest.raises(AriUnavailable, match="Cannot write to closing transport"):
            await requests.request("GET", "bridges", params=None, json_body=None, timeout_s=5)
        assert not sock.pending

    asyncio.run(main())


def test_an_answer_that_never_comes_fails_the_request_after_its_timeout_and_a_late_one_is_ignored() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)
        with pytest.raises(AriUnavailable, match=r"GET bridges at 127.0.0.1:8088: no answer within 0.05 s") as info:
            await requests.request("GET", "bridges", params=None, json_body=None, timeout_s=0.05)
        assert isinstance(info.value, AriError) and not sock.pending
        _answer(sock, 0)  # the late answer finds no one waiting: dropped quietly

    asyncio.run(main())


def test_a_socket_whose_current_request_is_held_is_avoided_until_every_socket_is() -> None:
    async def main() -> None:
        requests, [held, free] = _pool(2)
        slow = asyncio.create_task(requests.request("POST", "channels/c1/variable", params=None, json_body=None,
                                                    timeout_s=60))
        await wait_for_async(lambda: held.unanswered == 1, "the slow one sent")
        held.serving_since -= STALLED_S + 1  # Asterisk has been on it for over STALLED_S
        quick = [asyncio.create_task(requests.request("GET", f"channels/c{n}", params=None, json_body=None,
                                                      timeout_s=60)) for n in range(3)]
        await wait_for_async(lambda: requests.in_flight == 4, "all sent")
        assert (held.unanswered, free.unanswered) == (1, 3)  # none queued behind the held command
        now = asyncio.get_running_loop().time()
        assert requests.ready(now)
        free.serving_since -= STALLED_S + 1  # now both are held: not ready (the client takes HTTP) ...
        assert not requests.ready(now)
        # ... and sent anyway, the one with fewer waiting goes first.
        last = asyncio.create_task(requests.request("GET", "bridges", params=None, json_body=None, timeout_s=60))
        await wait_for_async(lambda: held.unanswered == 2, "the last one on the held socket")
        for n in range(3):
            _answer(free, n)
        _answer(held, 0)
        _answer(held, 1)
        await asyncio.gather(slow, last, *quick)

    asyncio.run(main())


def test_a_timed_out_request_still_counts_against_its_socket_until_asterisk_answers_it() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)
        with pytest.raises(AriUnavailable, match="no answer within"):
            await requests.request("POST", "channels/c1/variable", params=None, json_body=None, timeout_s=0.05)
        assert sock.unanswered == 1 and not sock.pending  # Asterisk serves it still, in order
        _answer(sock, 0)  # late: dropped, and the socket is free again
        assert sock.unanswered == 0

    asyncio.run(main())


def test_losing_one_socket_fails_only_its_own_requests() -> None:
    async def main() -> None:
        requests, [lost, kept] = _pool(2)
        tasks = [asyncio.create_task(requests.request("GET", f"channels/c{n}", params=None, json_body=None,
                                                      timeout_s=60)) for n in range(2)]
        await wait_for_async(lambda: (len(lost.pending), len(kept.pending)) == (1, 1), "one on each")
        assert requests.detach(lost, "request websocket s0 closed") == 1
        with pytest.raises(AriUnavailable, match="s0 closed with the request in flight"):
            await asyncio.wait_for(tasks[0], 5)
        assert requests.sockets == [kept] and not tasks[1].done()
        _answer(kept, 0)
        assert (await tasks[1]).status == 200

    asyncio.run(main())


def test_an_answer_read_while_its_request_is_still_being_sent_leaves_the_socket_free() -> None:
    async def main() -> None:
        requests, [sock] = _pool(1)

        async def slow_send(data: bytes, opcode: aiohttp.WSMsgType) -> None:
            sent = orjson.loads(data)
            sock.ws.sent.append(sent)  # type: ignore[attr-defined]
            _answer(sock, 0)  # the reader got the answer while the send was still draining
            await asyncio.sleep(0)

        sock.ws.send_frame = slow_send  # type: ignore[method-assign]
        assert (await requests.request("GET", "bridges", params=None, json_body=None, timeout_s=5)).status == 200
        assert sock.unanswered == 0 and requests.ready(asyncio.get_running_loop().time() + 60)

    asyncio.run(main())


def test_a_slow_request_is_logged_with_the_requests_ahead_of_it_on_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    import callctl.ari.transport as transport
    from callctl.logging import Throttle

    monkeypatch.setattr(transport, "SLOW_S", -1.0)  # every request counts as slow: the fields are what is tested
    monkeypatch.setattr(transport, "_slow_lines", Throttle())  # none left out by other tests' slow requests

    async def main() -> None:
        requests, [sock] = _pool(1)
        first = asyncio.create_task(requests.request("POST", "channels/c1/answer", params=None, json_body=None,
                                                     timeout_s=5))
        second = asyncio.create_task(requests.request("POST", "channels/c2/answer", params=None, json_body=None,
                                                      timeout_s=5))
        await wait_for_async(lambda: len(sock.ws.sent) == 2, "two requests sent")  # type: ignore[attr-defined]
        _answer(sock, 0)
        _answer(sock, 1)
        await asyncio.gather(first, second)

    with capture_logs() as logs:
        asyncio.run(main())
    one, two = [e for e in logs if e["event"] == "ari_request_slow"]
    assert one["uri"] == "channels/c1/answer" and one["ahead"] == 0 and one["queued_ms"] == 0.0
    assert two["uri"] == "channels/c2/answer" and two["ahead"] == 1 and two["socket"] == "s0"
    assert two["queued_ms"] + two["served_ms"] == pytest.approx(two["ms"], abs=0.2)


def test_diagnostic_lines_are_throttled_and_the_ones_left_out_are_counted() -> None:
    from callctl.logging import Throttle

    throttle = Throttle(per_s=2)
    assert [throttle.allow() for _ in range(5)] == [True, True, False, False, False]
    assert throttle.unlogged() == 3 and throttle.unlogged() is None
