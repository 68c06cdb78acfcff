"""SIP users from the database on a real Asterisk: added by the CLI, a phone registers with digest auth;
removed by the CLI, the same phone is refused and the endpoint is gone (realtime, no reload)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_lines_cli import cli, db
from tests.support import sipp

pytestmark = pytest.mark.integration

# A phone on another loopback address: not matched by the `local-peer` identify (127.0.0.1), so Asterisk
# can only know it by its SIP user name, as a real phone on the Internet.
PHONE_IP = "127.0.0.2"

def register(asterisk: AsteriskInstance, user: str, password: str) -> tuple[int, str]:
    """SIPp REGISTERs as ``user``; returns its exit code (0: 200 OK after the challenge) and the SIP trace."""
    res = sipp.register("127.0.0.1", asterisk.sip_port, user, password, local_ip=PHONE_IP, expires_s=120)
    return res.returncode, "\n".join(text for _at, text in res.messages)


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
