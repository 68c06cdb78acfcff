"""Real SIP callers for tests: SIPp scenarios built from a short script of steps.

A caller dials a number, waits for 200 OK, then runs steps: ("dtmf", "1234#") sends RFC 2833 digits
(tests/support/dtmf.py, 400 ms apart), ("audio", seconds) sends G.711 A-law speech, ("pause", ms),
then either hangs up itself ("bye") or waits for the far end's BYE ("wait_bye").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scripts.devstack import free_port, free_port_pair, hand_out, handed_out
from tests.support.dtmf import write_pcap

PCAPS = Path("/usr/share/sip-tester")

def _sdp(address: str, port: str) -> str:
    """The audio offer or answer (PCMA, RFC 2833 events) on SIPp's ``address`` and ``port`` keywords."""
    return f"""      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[{address}_type] [{address}]
      t=0 0
      m=audio [{port}] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
"""


_INVITE_SEND = """
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: sip:{caller}@[local_ip]:[local_port]
      Max-Forwards: 70{auth}
      Content-Type: application/sdp
      Content-Length: [len]

""" + _sdp("local_ip", "auto_media_port") + """    ]]>
  </send>
  <recv response="100" optional="true"/>
"""

_ACK = """
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      {via}
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Contact: sip:{caller}@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""


def _invite(caller: str, auth: tuple[str, str] | None, expect: int) -> str:
    """INVITE (answered a digest challenge first when ``auth``), then the final response ``expect``."""
    parts = []
    cseq = 1
    if auth is not None:
        parts.append(_INVITE_SEND.format(caller=caller, cseq=cseq, auth=""))
        parts.append('  <recv response="401" auth="true"/>\n')
        # The ACK of a non-2xx reuses the INVITE's Via (same transaction).
        parts.append(_ACK.format(caller=caller, cseq=cseq, via="[last_Via:]"))
        cseq = 2
        line = f"\n      [authentication username={auth[0]} password={auth[1]}]"
        parts.append(_INVITE_SEND.format(caller=caller, cseq=cseq, auth=line))
    else:
        parts.append(_INVITE_SEND.format(caller=caller, cseq=cseq, auth=""))
    parts.append('  <recv response="180" optional="true"/>\n  <recv response="183" optional="true"/>\n')
    if expect == 200:
        parts.append('  <recv response="200" rtd="true"/>\n')
        parts.append(_ACK.format(caller=caller, cseq=cseq,
                                 via="Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"))
    else:
        parts.append(f'  <recv response="{expect}"/>\n')
        parts.append(_ACK.format(caller=caller, cseq=cseq, via="[last_Via:]"))
    return "".join(parts)


_BYE = """
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
"""

_WAIT_BYE = """
  <recv request="BYE" timeout="{timeout_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: sip:sipp@[local_ip]:[local_port]
      Content-Length: 0
    ]]>
  </send>
"""


def scenario(steps: list[tuple[str, object]], *, caller: str = "33612345678", bye_timeout_s: float = 30,
             work: Path | None = None, auth: tuple[str, str] | None = None, expect: int = 200) -> str:
    parts = [_invite(caller, auth, expect)]
    for n, (kind, arg) in enumerate(steps):
        if kind == "dtmf":
            if work is None:
                raise ValueError("dtmf steps need a work folder for their capture")
            pcap = work / f"dtmf-{n}.pcap"
            seconds = write_pcap(pcap, str(arg), part=n)
            parts.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n')
            # play_pcap_audio returns at once: pause for as long as the capture lasts, unless the
            # far end's BYE is awaited next (a BYE arriving during a pause aborts the SIPp call).
            if n + 1 >= len(steps) or steps[n + 1][0] != "wait_bye":
                parts.append(f'  <pause milliseconds="{int(seconds * 1000) + 100}"/>\n')
        elif kind == "audio":
            parts.append(f'  <nop><action><exec play_pcap_audio="{PCAPS / "g711a.pcap"}"/></action></nop>\n'
                         f'  <pause milliseconds="{int(float(str(arg)) * 1000)}"/>\n')
        elif kind == "pause":
            parts.append(f'  <pause milliseconds="{int(str(arg))}"/>\n')
        elif kind == "bye":
            parts.append(_BYE.format(caller=caller, cseq=3 if auth else 2))
        elif kind == "wait_bye":
            parts.append(_WAIT_BYE.format(timeout_ms=int(bye_timeout_s * 1000)))
        else:
            raise ValueError(f"unknown SIPp step {kind!r}")
    body = "".join(parts)
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="callctl test">\n{body}\n</scenario>\n'


_REGISTER = """
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>{auth}
      Expires: {expires_s}
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""


def register_scenario(user: str, password: str | None, final: int = 200, *, expires_s: int = 60) -> str:
    """A phone's REGISTER of ``user``: with ``password``, the digest challenge (401) answered, then ``final``
    awaited; without, ``final`` awaited at once (a refusal, or the challenge itself)."""
    body = _REGISTER.format(user=user, cseq=1, auth="", expires_s=expires_s)
    if password is not None:
        body += '  <recv response="401" auth="true"/>\n'
        body += _REGISTER.format(user=user, cseq=2, expires_s=expires_s,
                                 auth=f"\n      [authentication username={user} password={password}]")
    body += f'  <recv response="{final}"/>\n'
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="a phone registers">\n{body}</scenario>\n'


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    messages: list[tuple[dt.datetime, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first(self, direction: str, start: str) -> dt.datetime:
        """Time of the first message sent/received (``direction``) whose first line starts with ``start``."""
        for at, text in self.messages:
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) > 1 and lines[0].startswith(direction) and lines[1].strip().startswith(start):
                return at
        raise LookupError(f"no {direction} message starting {start!r} in the SIPp trace")

    def talk_s(self) -> float:
        """ACK sent to BYE (sent or received): the call's answered length as SIPp lived it."""
        ack = self.first("UDP message sent", "ACK")
        try:
            bye = self.first("UDP message sent", "BYE")
        except LookupError:
            bye = self.first("UDP message received", "BYE")
        return (bye - ack).total_seconds()


def _free_media_port(local_ip: str = "127.0.0.1") -> int:
    """An even UDP port with the next three free too, on the address SIPp binds: SIPp opens audio
    RTP + RTCP there and video RTP + RTCP on the two after (checked on 127.0.0.1 only, a SIPp on
    127.0.0.2 could be handed a port another one already holds there)."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM)
        if port % 2 == 0 and port < 65000 and not handed_out(range(port + 1, port + 4)):  # e.g. SIPp's -p
            with contextlib.ExitStack() as held:
                try:
                    for p in range(port, port + 4):
                        s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                        s.bind((local_ip, p))
                except OSError:
                    continue
                hand_out(range(port, port + 4))
                return port
    raise RuntimeError("no free RTP port range")


_TRACE_HEAD = re.compile(r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)", re.M)


def _parse_trace(text: str) -> list[tuple[dt.datetime, str]]:
    out = []
    chunks = _TRACE_HEAD.split(text)
    for i in range(1, len(chunks) - 1, 2):
        stamp = dt.datetime.strptime(chunks[i].replace("  ", " "), "%Y-%m-%d %H:%M:%S.%f")
        out.append((stamp, chunks[i + 1].strip("\n")))
    return out


_STARTED: list[subprocess.Popen[str]] = []


def _popen(cmd: list[str], work: Path) -> subprocess.Popen[str]:
    # errors="replace": SIPp echoes stray binary (a late RTCP packet on its SIP port) to stderr.
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    _STARTED.append(proc)
    return proc


def reap() -> None:
    """Stop the SIPp processes a test left running (it failed before ``finish``): otherwise they are
    garbage-collected during a later test, whose ResourceWarning then fails an innocent test."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
            proc.communicate(timeout=10)


def start_call(sip_port: int, number: str, steps: list[tuple[str, object]], *, calls: int = 1, rate: float = 10,
               caller: str = "33612345678", timeout_s: float = 60, concurrent: int | None = None,
               bye_timeout_s: float = 30, auth: tuple[str, str] | None = None, expect: int = 200,
               local_ip: str = "127.0.0.1", remote_ip: str = "127.0.0.1") -> tuple[subprocess.Popen[str], Path]:
    """Start SIPp in the background; finish it with ``finish``. ``auth``: (user, password) answers the
    digest challenge of a business-line user's INVITE; ``expect``: the final response awaited;
    ``remote_ip``: the Asterisk's SIP address (a cluster's nodes listen on 127.0.0.2, 127.0.0.3...)."""
    work = Path(tempfile.mkdtemp(prefix="sipp-"))
    (work / "scenario.xml").write_text(scenario(steps, caller=caller, bye_timeout_s=bye_timeout_s, work=work,
                                                auth=auth, expect=expect))
    cmd = ["sipp", f"{remote_ip}:{sip_port}", "-sf", str(work / "scenario.xml"), "-s", number,
           "-i", local_ip, "-p", str(free_port_pair()), "-m", str(calls), "-r", str(rate),
           "-l", str(concurrent or calls),
           "-nostdin", "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-trace_msg",
           "-message_file", str(work / "messages.log"), "-trace_err", "-error_file", str(work / "errors.log"),
           "-max_recv_loops", "1000", "-mp", str(_free_media_port(local_ip))]
    proc = _popen(cmd, work)
    return proc, work


def finish(proc: subprocess.Popen[str], work: Path, timeout_s: float = 90) -> SippResult:
    out, err = proc.communicate(timeout=timeout_s)
    trace = (work / "messages.log").read_text(errors="replace") if (work / "messages.log").exists() else ""
    errors = (work / "errors.log").read_text(errors="replace") if (work / "errors.log").exists() else ""
    return SippResult(proc.returncode, out[-3000:], (err + errors)[-3000:], _parse_trace(trace))


def call(sip_port: int, number: str, steps: list[tuple[str, object]], **kw: object) -> SippResult:
    proc, work = start_call(sip_port, number, steps, **kw)  # type: ignore[arg-type]
    return finish(proc, work)


def register(remote_ip: str, remote_port: int, user: str, password: str | None, *, local_ip: str,
             local_port: int | None = None, final: int = 200, expires_s: int = 60) -> SippResult:
    """SIPp at ``local_ip``:``local_port`` (a free port pair if None) REGISTERs ``user`` at ``remote_ip``:
    ``remote_port`` (see ``register_scenario``); ``ok`` when ``final`` came."""
    work = Path(tempfile.mkdtemp(prefix="sipp-register-"))
    (work / "register.xml").write_text(register_scenario(user, password, final=final, expires_s=expires_s))
    res = subprocess.run(["sipp", f"{remote_ip}:{remote_port}", "-sf", str(work / "register.xml"), "-i", local_ip,
                          "-p", str(local_port or free_port_pair()), "-m", "1", "-nostdin", "-timeout", "15s",
                          "-timeout_error", "-trace_msg", "-message_file", str(work / "messages.log")],
                         cwd=work, capture_output=True, text=True, timeout=30)
    trace = (work / "messages.log").read_text(errors="replace") if (work / "messages.log").exists() else ""
    return SippResult(res.returncode, res.stdout[-3000:], res.stderr[-3000:], _parse_trace(trace))


_UAS_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callctl far end">
  <recv request="INVITE" crlf="true">{capture}</recv>
  <send>
    <![CDATA[
      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""

_UAS_RING = """
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]{record_route}
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="{ring_ms}"/>
"""

_UAS_200 = """
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]{record_route}
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

""" + _sdp("media_ip", "media_port") + """    ]]>
  </send>
  <recv request="ACK" rtd="true" crlf="true"/>
"""

_UAS_ANSWER = _UAS_200 + """
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
"""

_UAS_HANG_UP = _UAS_200 + """
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [$remote_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:far-end@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$remote_from]
      [last_Call-ID:]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
"""

_UAS_BUSY = """
  <send>
    <![CDATA[
      SIP/2.0 486 Busy Here
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
"""


# Rings for ring_ms; a CANCEL meanwhile ends the call (200 to the CANCEL, 487 to the INVITE), else answers.
_UAS_CANCELLED_OR_ANSWER = """
  <recv request="CANCEL" timeout="{ring_ms}" ontimeout="answer"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$invite_cseq] INVITE
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK" next="end"/>
  <label id="answer"/>
""" + _UAS_ANSWER + """
  <label id="end"/>
"""


def start_far_end(port: int, mode: str = "answer", *, ring_ms: int = 500, calls: int = 1,
                  talk_timeout_s: float = 60, talk_ms: int = 3000, local_ip: str = "127.0.0.1",
                  record_route: bool = False) -> tuple[subprocess.Popen[str], Path]:
    """SIPp as the far end of a trunk (the PSTN) on ``port``: "answer" (then waits for BYE), "hang_up"
    (answers, hangs up itself after ``talk_ms``), "busy", or "cancelled_or_answer" (rings ``ring_ms``
    unless cancelled meanwhile, then answers and waits for BYE). ``record_route``: its 180 and 200 echo
    the INVITE's Record-Route, as a phone behind a proxy does (a trunk needs no route set)."""
    work = Path(tempfile.mkdtemp(prefix="sipp-uas-"))
    # SIPp refuses variables that are assigned but never used: capture only when hanging up.
    capture = ("""
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>
    </action>
  """ if mode == "hang_up" else "")
    if mode == "cancelled_or_answer":
        capture = """
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq"/>
    </action>
  """
    body = _UAS_HEAD.replace("{capture}", capture)
    rr = "\n      [last_Record-Route:]" if record_route else ""
    if mode == "cancelled_or_answer":
        body += _UAS_RING.format(ring_ms=0, record_route=rr) + _UAS_CANCELLED_OR_ANSWER.format(
            ring_ms=ring_ms, talk_timeout_ms=int(talk_timeout_s * 1000), record_route=rr)
    else:
        body += _UAS_RING.format(ring_ms=ring_ms, record_route=rr)
        body += {"answer": _UAS_ANSWER.format(talk_timeout_ms=int(talk_timeout_s * 1000), record_route=rr),
                 "hang_up": _UAS_HANG_UP.format(talk_ms=talk_ms, record_route=rr), "busy": _UAS_BUSY}[mode]
    (work / "scenario.xml").write_text(body + "</scenario>\n")
    cmd = ["sipp", "-sf", str(work / "scenario.xml"), "-i", local_ip, "-p", str(port), "-m", str(calls),
           "-nostdin", "-timeout", f"{int(talk_timeout_s + 30)}s", "-timeout_error", "-trace_msg",
           "-message_file", str(work / "messages.log"), "-trace_err", "-error_file", str(work / "errors.log"),
           "-mp", str(_free_media_port(local_ip))]
    proc = _popen(cmd, work)
    return proc, work
