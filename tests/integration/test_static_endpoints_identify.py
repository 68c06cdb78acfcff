"""The static trunk endpoints (asterisk-conf/pjsip.conf: `pstn`, `emergency`, `emergency-pidf`, and the carrier
`local-peer` of pjsip_carrier.conf) have no authentication: Asterisk must know them by their address only. With
PJSIP's default `identify_by = username,ip`, a request from anywhere whose From user was one of their names was
taken for that trunk: a caller ID believed (trust_id_inbound) and calls into from-callers without a password.
Seen on the real Asterisk: an INVITE from 127.0.0.7 with `From: <sip:pstn@...>` was answered 100/1xx (taken for
the trunk) instead of being challenged. docs/security.md, "Trunks are known by their address"."""

from __future__ import annotations

import socket
import uuid

import pytest

from scripts.devstack import AsteriskInstance

pytestmark = pytest.mark.integration

OUTSIDER_IP = "127.0.0.7"  # no identify matches it
ACCESS_NUMBER = "+33900000001"


def _invite(asterisk: AsteriskInstance, sock: socket.socket, from_user: str) -> list[str]:
    """Send one INVITE with ``from_user`` and return the status lines received until a final one."""
    host, port = sock.getsockname()[:2]
    call_id, branch = uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:16]
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           f"m=audio {port + 2} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
    request = (f"INVITE sip:{ACCESS_NUMBER}@127.0.0.1:{asterisk.sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
               f"From: <sip:{from_user}@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
               f"To: <sip:{ACCESS_NUMBER}@127.0.0.1>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
               f"Contact: <sip:{from_user}@{host}:{port}>\r\n"
               f"P-Asserted-Identity: <sip:+33123456789@{host}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    sock.sendto(request.encode(), ("127.0.0.1", asterisk.sip_port))
    statuses: list[str] = []
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            statuses.append("timeout")
            return statuses
        text = data.decode(errors="replace")
        if f"Call-ID: {call_id}" not in text or not text.startswith("SIP/2.0 "):
            continue
        status = text.split("\r\n", 1)[0][len("SIP/2.0 "):]
        statuses.append(status)
        if int(status[:3]) >= 200:
            to = next(line for line in text.split("\r\n") if line.lower().startswith("to:"))
            ack = (f"ACK sip:{ACCESS_NUMBER}@127.0.0.1:{asterisk.sip_port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
                   f"From: <sip:{from_user}@{host}>;tag=x\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(ack.encode(), ("127.0.0.1", asterisk.sip_port))
            return statuses


@pytest.mark.parametrize("name", ["pstn", "emergency", "emergency-pidf", "local-peer"])
def test_a_trunks_name_from_another_address_is_challenged(asterisk: AsteriskInstance, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((OUTSIDER_IP, 0))
        sock.settimeout(5)
        statuses = _invite(asterisk, sock, name)
    assert statuses and statuses[-1].startswith("401"), (name, statuses)
    assert not any(s.startswith(("180", "183", "200")) for s in statuses), (name, statuses)
