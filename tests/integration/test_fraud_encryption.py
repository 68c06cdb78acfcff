"""Encryption for SIP users on a real Asterisk: a real TLS softphone (Debian's baresip) calls out over the
TLS transport with SRTP (SDES) required; plain RTP from a user who requires SRTP is refused."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import AsteriskInstance, ensure_root, free_port, free_port_pair
from tests.integration.test_daemon import wait_for_cdrs
from tests.integration.test_lines_cli import cli, db, run_cli
from tests.support import sipp
from tests.support.asterisk import wait_for

pytestmark = pytest.mark.integration

PHONE_IP = "127.0.0.3"


@pytest.fixture
def asterisk(database_url: str) -> Iterator[AsteriskInstance]:
    """Realtime users from this test's database, and the TLS transport on."""
    ensure_root()
    inst = AsteriskInstance(f"tls-{os.getpid()}", http_port=free_port(), sip_port=free_port_pair(),
                            rtp_start=31700, rtp_end=31799, trunk_port=free_port_pair(), tls_port=free_port())
    inst.use_database(database_url)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def tone(path: Path, seconds: float = 3.0) -> None:
    """An 8 kHz 16-bit mono sine, the softphone's microphone."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / 8000)))
                               for n in range(int(8000 * seconds))))


def baresip_call(work: Path, asterisk: AsteriskInstance, user: dict[str, Any], number: str, *,
                 talk_s: int = 6) -> tuple[int, str]:
    """Run baresip (TLS to Asterisk, SRTP mandatory) dialling ``number``; its output with the SIP trace."""
    cert, _key = asterisk.tls_files
    tone(work / "tone.wav")
    (work / "config").write_text(f"""poll_method epoll
sip_listen {PHONE_IP}:{free_port()}
sip_cafile {cert}
audio_source aufile,{work / "tone.wav"}
audio_player aufile,{work / "heard.wav"}
audio_alert aufile,{work / "heard.wav"}
rtp_ports 31900-31999
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module srtp.so
module_app account.so
module_app menu.so
""")
    (work / "accounts").write_text(
        f"<sip:{user['sip_username']}@127.0.0.1;transport=tls>;auth_pass={user['sip_password']};"
        f"outbound=\"sip:127.0.0.1:{asterisk.tls_port};transport=tls\";mediaenc=srtp-mand;regint=0;"
        "audio_codecs=PCMA,PCMU\n")
    proc = subprocess.Popen(["baresip", "-f", str(work), "-s", "-t", str(talk_s), "-e",
                             f"/dial sip:{number}@127.0.0.1:{asterisk.tls_port};transport=tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", cwd=work)
    try:
        # 50 packets: a second of the softphone's 20 ms frames.
        received = wait_for(lambda: max(0, received_packets(asterisk, user["sip_username"]) - 49), talk_s,
                            "Asterisk to receive and decrypt a second of the softphone's SRTP") + 49
    finally:
        out, _ = proc.communicate(timeout=talk_s + 30)
    return received, out


def received_packets(asterisk: AsteriskInstance, endpoint: str) -> int:
    """RTP packets Asterisk received (and, for SRTP, authenticated and decrypted) on the endpoint's channel."""
    for line in asterisk.rx("pjsip show channelstats", check=False).splitlines():
        fields = line.split()
        if any(f.startswith(f"PJSIP/{endpoint}") or f.startswith(endpoint) for f in fields):
            numbers = [f for f in fields[3:] if f.isdigit()]
            return int(numbers[0]) if numbers else 0
    return 0


def paying_user(database_url: str, tmp_path: Path) -> dict[str, Any]:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", "+33170000001")
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination,zone,rate_per_minute,currency\n33,France,2,0.60,EUR\n")
    assert run_cli(database_url, "rates", "import", str(deck), "--deck", "test").returncode == 0
    assert run_cli(database_url, "credit", "add", "--account", acc["id"], "10").returncode == 0
    return user


def test_a_tls_softphone_requiring_srtp_calls_out_and_its_media_is_srtp(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, tmp_path: Path) -> None:
    user = paying_user(database_url, tmp_path)
    required = cli(database_url, "fraud", "encryption", user["id"], "--require", "--by", "ops")
    assert (required["media_encryption"], required["media_encryption_optimistic"]) == ("sdes", "no")
    far = sipp.start_far_end(asterisk.trunk_port, "answer")
    d = daemon_factory()
    d.wait_until_ready()
    received, out = baresip_call(tmp_path, asterisk, user, "0123456789")
    assert received >= 50  # Asterisk decrypted the softphone's SRTP packets (SAVP: plain RTP would be dropped)
    far_result = sipp.finish(*far)
    assert far_result.ok, far_result.stderr + out[-3000:]
    assert any("INVITE sip:+33123456789@" in text for _at, text in far_result.messages)
    # The softphone spoke TLS to Asterisk, and Asterisk answered its SRTP offer with SRTP (SDES keys).
    answer = out.split("SIP/2.0 200 OK", 1)[1] if "SIP/2.0 200 OK" in out else ""
    assert "RTP/SAVP" in answer and "a=crypto:" in answer, out[-3000:]
    assert "srtp: audio: SRTP is Enabled" in out and "Via: SIP/2.0/TLS" in out
    rows = wait_for_cdrs(database_url, 2)
    assert {r["disposition"] for r in rows} == {"ANSWERED"}
    [audit] = db(database_url, "SELECT what, changed_by FROM fraud_audit WHERE what = 'encryption'")
    assert audit["changed_by"] == "ops"


def test_a_user_requiring_srtp_cannot_call_with_plain_rtp(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str) -> None:
    acc = cli(database_url, "account", "create", "--name", "Acme", "--country", "FR")
    user = cli(database_url, "user", "add", "--account", acc["id"], "--name", "Alice", "--number", "+33170000001")
    cli(database_url, "fraud", "encryption", user["id"], "--require")
    d = daemon_factory()
    d.wait_until_ready()
    # SIPp offers plain RTP/AVP over UDP: refused before the engine sees the call.
    result = sipp.call(asterisk.sip_port, "0123456789", [], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP, expect=488)
    assert result.ok, result.stderr
    assert not d.events("call_started")


def test_sdes_keys_sent_over_udp_by_a_user_requiring_tls_are_refused_by_the_engine(
        daemon_factory: Any, asterisk: AsteriskInstance, database_url: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    # Asterisk itself accepts an SDES (SRTP) offer over UDP, keys in clear on the wire; the engine refuses it.
    user = paying_user(database_url, tmp_path)
    cli(database_url, "fraud", "encryption", user["id"], "--require")
    d = daemon_factory()
    d.wait_until_ready()
    monkeypatch.setattr(sipp, "_INVITE_SEND", sipp._INVITE_SEND.replace(
        "m=audio [auto_media_port] RTP/AVP 8 101",
        "m=audio [auto_media_port] RTP/SAVP 8 101\n      a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        "inline:rG8elIXGYWeJyzlFvbCFZGk/npaR9+b9sru4MU0g"))
    # Answered for the announcement, then hung up by the engine (its BYE goes over TLS, as for every request
    # to a phone that requires encryption, so this UDP-only SIPp does not see it: it just waits).
    result = sipp.call(asterisk.sip_port, "0123456789", [("pause", 4000)], caller=user["sip_username"],
                       auth=(user["sip_username"], user["sip_password"]), local_ip=PHONE_IP)
    assert result.ok, result.stderr
    assert d.wait_for_log("fraud_call_refused")["rule"] == "tls_required"
    [row] = wait_for_cdrs(database_url, 1)
    assert row["disposition"] == "FRAUD_TLS_REQUIRED"
