"""The brute-force blocker's event side (no I/O): AMI security events decoded, failures counted per
address, a block queued at the threshold, trusted and non-failure events ignored."""

from __future__ import annotations

from typing import Any

from callctl.ami.client import AmiClient, SecurityEvent
from callctl.fraud.bruteforce import BlockPolicy, parse_networks
from callctl.fraud.edge import EdgeBlocker
from callctl.metrics import Metrics


def _event(name: str, address: str) -> SecurityEvent:
    return SecurityEvent(name, f"IPV4/UDP/{address}/5060", "u0123456789abcde", "PJSIP")


def test_failures_from_one_address_queue_one_block_and_count_in_metrics() -> None:
    metrics = Metrics()
    blocker = EdgeBlocker(None, BlockPolicy(failures=3, window_s=60, trusted=parse_networks("127.0.0.1/32", "t")),
                          metrics)
    for _ in range(3):
        blocker.on_event(_event("ChallengeResponseFailed", "203.0.113.7"))
    blocker.on_event(_event("ChallengeSent", "203.0.113.8"))  # a challenge is not a failure
    for _ in range(5):
        blocker.on_event(_event("InvalidPassword", "127.0.0.1"))  # trusted: never blocked
    assert blocker._pending.qsize() == 1
    address, failures, reason = blocker._pending.get_nowait()
    assert (address, failures) == ("203.0.113.7", 3) and "ChallengeResponseFailed" in reason
    assert metrics.value("callctl_sip_auth_failures_total") == 8.0


def test_the_ami_reader_decodes_security_events_and_ignores_the_rest() -> None:
    seen: list[SecurityEvent] = []
    client = AmiClient("127.0.0.1", 5038, "callctl", "secret", seen.append)
    message: dict[str, Any] = {"Event": "InvalidAccountID", "RemoteAddress": "IPV4/UDP/198.51.100.4/5060",
                               "AccountID": "admin", "Service": "PJSIP"}
    client._dispatch(None, message)
    client._dispatch(None, {"Event": "FullyBooted", "Status": "Fully Booted"})
    client._dispatch(None, {"Event": "Newchannel"})
    assert seen == [SecurityEvent("InvalidAccountID", "IPV4/UDP/198.51.100.4/5060", "admin", "PJSIP")]
