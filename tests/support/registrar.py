"""A SIP user's phone for cluster tests (docs/scaling.md, "SIP users through Kamailio"): SIPp registers
it through Kamailio as a real phone does (digest auth, no "Supported: path"), then SIPp answers calls
on the same address and port, echoing Record-Route as every phone does (tests/support/sipp.py's far
end, told to: a trunk needs no route set)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from scripts.devstack import free_port_pair
from tests.support import sipp

__all__ = ["PHONE_IP", "PRIVATE_CONTACT", "register", "start_call_behind_nat", "start_phone"]

# Not 127.0.0.1: the nodes' `local-peer` identify would take the phone for a trusted peer.
PHONE_IP = "127.0.0.2"


def register(proxy_port: int, user: str, password: str, local_port: int, *, expires_s: int = 300,
             proxy_ip: str = "127.0.0.1") -> sipp.SippResult:
    """The phone at PHONE_IP:``local_port`` registers ``user`` through the proxy, answering its digest
    challenge; ``ok`` when the REGISTER was answered 200."""
    return sipp.register(proxy_ip, proxy_port, user, password, local_ip=PHONE_IP, local_port=local_port,
                         expires_s=expires_s)


def start_phone(local_port: int, *, talk_timeout_s: float = 30) -> tuple[subprocess.Popen[str], Path]:
    """The registered phone (same address and port as its REGISTER) answers one call, echoing the route
    set, and waits for the BYE; finish it with ``sipp.finish``."""
    return sipp.start_far_end(local_port, "answer", ring_ms=300, talk_timeout_s=talk_timeout_s, local_ip=PHONE_IP,
                              record_route=True)


# What a phone behind NAT writes in its Contact: a private address nobody else can reach.
PRIVATE_CONTACT = "10.9.9.9:5060"


def start_call_behind_nat(proxy_port: int, user: str, password: str, number: str, *,
                          bye_timeout_s: float = 20) -> tuple[subprocess.Popen[str], Path]:
    """The user's phone, its Contact a private address (PRIVATE_CONTACT), calls ``number`` through the
    proxy (answering the digest challenge) and waits for the far end's BYE; ``sipp.finish`` it."""
    work = Path(tempfile.mkdtemp(prefix="sipp-nat-"))
    text = sipp.scenario([("wait_bye", None)], caller=user, bye_timeout_s=bye_timeout_s, work=work,
                         auth=(user, password))
    contact = f"Contact: sip:{user}@[local_ip]:[local_port]"
    assert contact in text, "tests/support/sipp.py's INVITE changed its Contact"
    (work / "scenario.xml").write_text(text.replace(contact, f"Contact: sip:{user}@{PRIVATE_CONTACT}"))
    cmd = ["sipp", f"127.0.0.1:{proxy_port}", "-sf", str(work / "scenario.xml"), "-s", number, "-i", PHONE_IP,
           "-p", str(free_port_pair()), "-m", "1", "-nostdin", "-timeout", f"{int(bye_timeout_s + 20)}s",
           "-timeout_error", "-trace_msg", "-message_file", str(work / "messages.log"), "-trace_err",
           "-error_file", str(work / "errors.log"), "-mp", str(sipp._free_media_port(PHONE_IP))]
    return sipp._popen(cmd, work), work
