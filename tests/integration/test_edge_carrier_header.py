"""What the cluster's front door tells the nodes (docs/security.md, "Carriers behind Kamailio"), seen on the wire: a
real Kamailio in front of a stand-in node (a UDP socket that answers as a node does and keeps what it received).
Kamailio removes X-Callctl-Carrier from every request and adds it, with the cluster's token, to the carriers' new
requests and its own OPTIONS probes only; a request sent again (its 403 lost) counts once toward a ban. The real
nodes' side is tests/integration/test_cluster_carriers.py."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from callctl.fraud.bruteforce import BlockPolicy
from callctl.fraud.kamailio import parse_dump
from scripts.cluster import KamailioInstance
from scripts.devstack import CARRIER_HEADER, free_port_pair
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EDGE_IP, CARRIER_IP, OUTSIDER_IP = "127.0.0.4", "127.0.0.8", "127.0.0.9"
ACCESS_NUMBER = "+33900000001"
USER = "u0123456789abcde"  # the shape of a callctl SIP user name (callctl/lines/accounts.py), no such user


class StandInNode:
    """A node's SIP port on 127.0.0.1: OPTIONS answered 200 (Kamailio keeps it in rotation), INVITE 486 (each call
    ends at once); every request kept, as received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stand-in-node", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            self.requests.append(text)
            method = text.split(" ", 1)[0]
            if method in ("OPTIONS", "INVITE"):
                self.sock.sendto(_response(text, "200 OK" if method == "OPTIONS" else "486 Busy Here"), peer)

    def received(self, method: str, call_id: str | None = None) -> list[str]:
        return [r for r in list(self.requests) if r.startswith(f"{method} ")
                and (call_id is None or f"\r\nCall-ID: {call_id}\r\n" in r)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _response(request: str, status: str) -> bytes:
    lines = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [line for line in lines if line.split(":", 1)[0].strip().lower() in ("via", "from", "call-id", "cseq")]
    to = next(line for line in lines if line.lower().startswith("to:"))
    if ";tag=" not in to:
        to += ";tag=node"
    return ("\r\n".join([f"SIP/2.0 {status}", *keep, to, "Content-Length: 0"]) + "\r\n\r\n").encode()


def carrier_headers(request: str) -> list[str]:
    """The X-Callctl-Carrier lines of ``request`` (any case)."""
    return [line for line in request.split("\r\n") if line.lower().startswith(CARRIER_HEADER.lower() + ":")]


class Caller:
    """A UA on ``ip`` sending hand-made requests to Kamailio (the same bytes again when asked: a retransmission)."""

    def __init__(self, ip: str, kamailio: KamailioInstance) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.ip, self.port = ip, int(self.sock.getsockname()[1])
        self.kamailio = (kamailio.listen_address, kamailio.listen_port)

    def invite(self, from_user: str, *, call_id: str | None = None, extra: str = "") -> bytes:
        call_id = call_id or uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex
        host, port = self.kamailio
        return (f"INVITE sip:{ACCESS_NUMBER}@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{from_user}@{self.ip}>;tag={call_id[:10]}\r\n"
                f"To: <sip:{ACCESS_NUMBER}@{host}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:{from_user}@{self.ip}:{self.port}>\r\n{extra}Content-Length: 0\r\n\r\n").encode()

    def send(self, request: bytes, *, ack: bool = True) -> str:
        """Send ``request``; the status line of its final response (acknowledged unless ``ack`` is false: as if
        the response had been lost)."""
        self.sock.sendto(request, self.kamailio)
        call_id = re.search(rb"\r\nCall-ID: (\S+)\r\n", request)
        assert call_id is not None
        deadline = time.monotonic() + 10
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            text = self.sock.recvfrom(65535)[0].decode(errors="replace")
            status = text.split("\r\n", 1)[0]
            code = int(status.split()[1])
            if code >= 200 and f"\r\nCall-ID: {call_id.group(1).decode()}\r\n" in text:
                if ack:
                    self.sock.sendto(_ack(request, text), self.kamailio)
                return status

    def close(self) -> None:
        self.sock.close()


def _ack(invite: bytes, response: str) -> bytes:
    head = invite.decode().split("\r\n\r\n", 1)[0].split("\r\n")
    to = next(line for line in response.split("\r\n") if line.lower().startswith("to:"))
    lines = [head[0].replace("INVITE", "ACK", 1)]
    for line in head[1:]:
        name = line.split(":", 1)[0].lower()
        if name in ("via", "max-forwards", "from", "call-id"):
            lines.append(line)
        elif name == "cseq":
            lines.append("CSeq: 1 ACK")
    return ("\r\n".join([*lines, to, "Content-Length: 0"]) + "\r\n\r\n").encode()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[KamailioInstance, StandInNode]]:
    node = StandInNode()
    kamailio = KamailioInstance(tmp_path / "kamailio", [f"127.0.0.1:{node.port}"], listen_address=EDGE_IP,
                                listen_port=free_port_pair(), debug=2, carrier_networks=(f"{CARRIER_IP}/32",),
                                guard=BlockPolicy(failures=4, window_s=60, block_s=20, max_block_s=600))
    try:
        kamailio.start()
        wait_for(lambda: kamailio.active_nodes() == {f"127.0.0.1:{node.port}"}, 10, "the stand-in node in rotation")
        yield kamailio, node
    finally:
        kamailio.stop()
        node.close()
        print("--- kamailio log (last 40 lines) ---", *kamailio.log_file.read_text(errors="replace")
              .splitlines()[-40:], sep="\n")


def test_only_the_carriers_requests_and_kamailio_s_probes_reach_a_node_with_the_cluster_s_token(
        edge: tuple[KamailioInstance, StandInNode]) -> None:
    kamailio, node = edge
    token_line = f"{CARRIER_HEADER}: {kamailio.carrier_token}"
    # Kamailio's own probes: identified by the nodes as before (they were by its address).
    wait_for(lambda: any(carrier_headers(r) == [token_line] for r in node.received("OPTIONS")), 10,
             "an OPTIONS probe with the token")
    carrier, outsider = Caller(CARRIER_IP, kamailio), Caller(OUTSIDER_IP, kamailio)
    try:
        # The carrier's call (whatever copy of the header its SBC sent is replaced): the token, once.
        call_id = uuid.uuid4().hex
        assert carrier.send(carrier.invite("33123456789", call_id=call_id,
                                           extra=f"{CARRIER_HEADER}: sent-by-the-sbc\r\n")).startswith("SIP/2.0 486")
        assert [carrier_headers(r) for r in node.received("INVITE", call_id)][:1] == [[token_line]]

        # A request shaped like a SIP user's, from outside, with the real token forged (any case): it reaches the
        # node (the user authenticates there) without the header, so the node can never take it for the carrier.
        call_id = uuid.uuid4().hex
        forged = f"{CARRIER_HEADER.lower()}: {kamailio.carrier_token}\r\n{CARRIER_HEADER}: {kamailio.carrier_token}\r\n"
        assert outsider.send(outsider.invite(USER, call_id=call_id, extra=forged)).startswith("SIP/2.0 486")
        assert [carrier_headers(r) for r in node.received("INVITE", call_id)][:1] == [[]]
        # Nor from inside the carrier's network: a user is a user wherever it calls from.
        call_id = uuid.uuid4().hex
        assert carrier.send(carrier.invite(USER, call_id=call_id)).startswith("SIP/2.0 486")
        assert [carrier_headers(r) for r in node.received("INVITE", call_id)][:1] == [[]]

        # Not a user and not from a carrier network: refused at the edge, header or not; never at a node.
        call_id = uuid.uuid4().hex
        assert outsider.send(outsider.invite("33123456789", call_id=call_id, extra=forged)) == \
            "SIP/2.0 403 Forbidden (Not A Carrier)"
        assert node.received("INVITE", call_id) == []
    finally:
        carrier.close()
        outsider.close()


def failures_counted(kamailio: KamailioInstance, address: str) -> int:
    found = re.search(rf"name:\s*{re.escape(address)}\|n\s+value:\s*(\d+)", kamailio.rpc("htable.dump", "authfail"))
    return int(found.group(1)) if found else 0


def test_an_invite_sent_again_after_its_403_was_lost_counts_once_toward_a_ban(
        edge: tuple[KamailioInstance, StandInNode]) -> None:
    kamailio, _ = edge
    outsider = Caller(OUTSIDER_IP, kamailio)
    try:
        # One INVITE and four retransmissions (same bytes: Call-ID, CSeq, Via branch), as a phone whose 403 was
        # lost sends it: each is answered 403, all of them are one failed attempt (the ban is at 4).
        invite = outsider.invite("33123456789")
        for n in range(5):
            assert outsider.send(invite, ack=n == 4) == "SIP/2.0 403 Forbidden (Not A Carrier)"
        assert failures_counted(kamailio, OUTSIDER_IP) == 1
        assert parse_dump(kamailio.rpc("htable.dump", "ipban")) == []
        # Three new attempts (a new branch each) make four: banned.
        for _ in range(3):
            assert outsider.send(outsider.invite("33123456789")) == "SIP/2.0 403 Forbidden (Not A Carrier)"
        assert [b.address for b in parse_dump(kamailio.rpc("htable.dump", "ipban"))] == [OUTSIDER_IP]
        assert outsider.send(outsider.invite("33123456789")) == "SIP/2.0 403 Forbidden (Address Banned)"
    finally:
        outsider.close()
