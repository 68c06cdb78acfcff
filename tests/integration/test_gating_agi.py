"""The daemon's FastAGI gate, as an operator's extensions.conf would call it."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.integration.test_lines_cli import cli

pytestmark = pytest.mark.integration


def agi_session(port: int, account: str, extension: str, callerid: str) -> dict[str, str]:
    """Plays Asterisk's side of a FastAGI session: headers, then '200 result=1' to each command."""
    headers = (f"agi_network: yes\nagi_network_script: gate?account={account}\nagi_request: "
               f"agi://127.0.0.1:{port}/gate?account={account}\nagi_channel: PJSIP/x-00000001\n"
               f"agi_callerid: {callerid}\nagi_extension: {extension}\n\n").encode()
    variables: dict[str, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(headers)
        buffer = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode()
                if text.startswith("SET VARIABLE "):
                    name, _, value = text[len("SET VARIABLE "):].partition(" ")
                    variables[name] = value.strip('"')
                    sock.sendall(b"200 result=1\n")
    return variables


def test_the_fastagi_gate_denies_an_emergency_call_of_a_line_without_emergency(
        daemon_factory: Any, database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    d = daemon_factory()
    d.wait_for_log("agi_listening", 20)
    port = int(d.env["CALLCTL_AGI_LISTEN"].rpartition(":")[2])
    refused = agi_session(port, acc["id"], "112", "+33170000001")
    assert refused["CALLCTL_GATE"] == "deny" and refused["CALLCTL_GATE_EMERGENCY"] == "1"
    assert refused["CALLCTL_GATE_RULE"] == "emergency_not_enabled"
    ordinary = agi_session(port, acc["id"], "0123456789", "+33170000001")
    assert ordinary["CALLCTL_GATE"] == "allow" and ordinary["CALLCTL_GATE_EMERGENCY"] == "0"
