"""A SIP user's phone for cluster tests (docs/scaling.md, "SIP users through Kamailio"): SIPp registers
it through Kamailio as a real phone does (digest auth, no "Supported: path"), then SIPp answers calls
on the same address and port, echoing Record-Route as every phone does (tests/support/sipp.py's far
end does not: a trunk needs no route set)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from scripts.devstack import free_port_pair
from tests.support import sipp

__all__ = ["PHONE_IP", "PRIVATE_CONTACT", "register", "start_call_behind_nat", "start_phone"]

# Not 127.0.0.1: the nodes' `local-peer` identify would take the phone for a trusted peer.
PHONE_IP = "127.0.0.2"

_REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="a phone registers">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: {expires}
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      [authentication username={user} password={password}]
      Expires: {expires}
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

_PHONE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="a registered phone answers">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE" timeout="{talk_timeout_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


def register(proxy_port: int, user: str, password: str, local_port: int, *, expires_s: int = 300,
             proxy_ip: str = "127.0.0.1") -> sipp.SippResult:
    """The phone at PHONE_IP:``local_port`` registers ``user`` through the proxy, answering its digest
    challenge; ``ok`` when the REGISTER was answered 200."""
    work = Path(tempfile.mkdtemp(prefix="sipp-register-"))
    (work / "register.xml").write_text(_REGISTER.format(user=user, password=password, expires=expires_s))
    res = subprocess.run(["sipp", f"{proxy_ip}:{proxy_port}", "-sf", str(work / "register.xml"), "-i", PHONE_IP,
                          "-p", str(local_port), "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error",
                          "-trace_msg", "-message_file", str(work / "messages.log")],
                         cwd=work, capture_output=True, text=True, timeout=30)
    trace = (work / "messages.log").read_text(errors="replace") if (work / "messages.log").exists() else ""
    return sipp.SippResult(res.returncode, res.stdout[-3000:], res.stderr[-3000:], sipp._parse_trace(trace))


def start_phone(local_port: int, *, talk_timeout_s: float = 30) -> tuple[subprocess.Popen[str], Path]:
    """The registered phone (same address and port as its REGISTER) answers one call and waits for the
    BYE; finish it with ``sipp.finish``."""
    work = Path(tempfile.mkdtemp(prefix="sipp-phone-"))
    (work / "phone.xml").write_text(_PHONE.format(talk_timeout_ms=int(talk_timeout_s * 1000)))
    cmd = ["sipp", "-sf", str(work / "phone.xml"), "-i", PHONE_IP, "-p", str(local_port), "-m", "1", "-nostdin",
           "-timeout", f"{int(talk_timeout_s + 30)}s", "-timeout_error", "-trace_msg",
           "-message_file", str(work / "messages.log"), "-trace_err", "-error_file", str(work / "errors.log"),
           "-mp", str(sipp._free_media_port(PHONE_IP))]
    return sipp._popen(cmd, work), work


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
