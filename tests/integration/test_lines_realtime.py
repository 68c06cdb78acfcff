"""SIP users from the database on a real Asterisk: added by the CLI, a phone registers with digest auth;
removed by the CLI, the same phone is refused and the endpoint is gone (realtime, no reload)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_lines_cli import cli, db

pytestmark = pytest.mark.integration

# A phone on another loopback address: not matched by the `local-peer` identify (127.0.0.1), so Asterisk
# can only know it by its SIP user name, as a real phone on the Internet.
PHONE_IP = "127.0.0.2"

_REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest auth">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: 120
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
      Expires: 120
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def register(asterisk: AsteriskInstance, user: str, password: str) -> tuple[int, str]:
    """SIPp REGISTERs as ``user``; returns its exit code (0: 200 OK after the challenge) and the SIP trace."""
    work = Path(tempfile.mkdtemp(prefix="sipp-register-"))
    (work / "register.xml").write_text(_REGISTER.format(user=user, password=password))
    res = subprocess.run(["sipp", f"127.0.0.1:{asterisk.sip_port}", "-sf", str(work / "register.xml"),
                          "-i", PHONE_IP, "-p", str(free_port_pair()), "-m", "1", "-nostdin", "-timeout", "15s",
                          "-timeout_error", "-trace_msg", "-message_file", str(work / "messages.log")],
                         cwd=work, capture_output=True, text=True, timeout=30)
    trace = (work / "messages.log").read_text(errors="replace") if (work / "messages.log").exists() else ""
    return res.returncode, trace


@pytest.fixture
def realtime_asterisk(database_url: str) -> Iterator[AsteriskInstance]:
    """An Asterisk of its own whose realtime PJSIP tables are this test's database."""
    ensure_root()
    url = urlsplit(database_url)
    inst = AsteriskInstance(f"lines-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=31000, rtp_end=31099, db_host=url.hostname or "127.0.0.1",
                            db_port=url.port or 5432, db_name=url.path.lstrip("/"), db_user=url.username or "postgres",
                            db_password=url.password or "")
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def endpoint_known(asterisk: AsteriskInstance, name: str) -> bool:
    return f"Endpoint:  {name}" in asterisk.rx(f"pjsip show endpoint {name}", check=False)


def test_a_user_added_by_the_cli_registers_and_once_removed_cannot(realtime_asterisk: AsteriskInstance,
                                                                     database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", "+33123456789")
    name, password = user["sip_username"], user["sip_password"]

    assert endpoint_known(realtime_asterisk, name)
    code, trace = register(realtime_asterisk, name, password)
    assert code == 0, trace[-3000:]
    contacts = db(database_url, "SELECT uri, endpoint FROM ps_contacts WHERE endpoint = $1", name)
    assert len(contacts) == 1 and PHONE_IP in contacts[0]["uri"]
    # The static objects of pjsip.conf are still there next to the realtime ones.
    assert endpoint_known(realtime_asterisk, "demo") and endpoint_known(realtime_asterisk, "local-peer")

    wrong, _ = register(realtime_asterisk, name, password + "x")
    assert wrong != 0

    cli(database_url, "user", "remove", user["id"])
    assert not endpoint_known(realtime_asterisk, name)
    assert db(database_url, "SELECT id FROM ps_contacts") == []
    code, trace = register(realtime_asterisk, name, password)
    assert code != 0
    # Asterisk challenges the unknown name like any other (no user enumeration) and refuses the answer.
    answer = trace.split("CSeq: 2 REGISTER", 1)[1]
    assert "SIP/2.0 401 Unauthorized" in answer and "SIP/2.0 200" not in answer
