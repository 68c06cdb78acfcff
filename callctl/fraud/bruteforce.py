"""SIP brute-force detection (pure): failed authentications per source address in a sliding window, the
trusted networks that are never blocked, and the address inside Asterisk's security events."""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from callctl.fraud import FraudError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Asterisk security events (AMI class "security") that mean "someone failed to authenticate".
FAILURE_EVENTS = frozenset({"InvalidPassword", "ChallengeResponseFailed", "InvalidAccountID", "FailedACL",
                            "UnexpectedAddress", "RequestNotAllowed", "AuthMethodNotAllowed"})


def parse_networks(text: str, where: str) -> tuple[Network, ...]:
    """'127.0.0.1/32, 10.0.0.0/8' -> networks; a bad entry is a FraudError naming ``where`` and the entry."""
    out = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            out.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise FraudError(f"{where}: '{entry}' is not an address or network (e.g. 10.0.0.0/8)") from None
    return tuple(out)


def is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in trusted)


def event_address(remote: str) -> str | None:
    """The source address of a security event's ``RemoteAddress`` ('IPV4/UDP/203.0.113.7/5060'), or None."""
    parts = remote.split("/")
    if len(parts) < 3:
        return None
    try:
        return str(ipaddress.ip_address(parts[2].strip("[]")))
    except ValueError:
        return None


@dataclass(frozen=True)
class BlockPolicy:
    failures: int = 5
    window_s: float = 60.0
    block_s: float = 900.0
    max_block_s: float = 86400.0
    trusted: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


class FailureCounter:
    """Failures per address in the last ``window_s`` (monotonic seconds given by the caller)."""

    def __init__(self, policy: BlockPolicy) -> None:
        self.policy = policy
        self._seen: dict[str, deque[float]] = {}

    def failure(self, address: str, now_s: float) -> int | None:
        """Count one failure; the number of failures in the window when it reaches the threshold (the address
        is to be blocked; its count starts again), else None. Trusted addresses are never counted."""
        if is_trusted(address, self.policy.trusted):
            return None
        seen = self._seen.setdefault(address, deque())
        seen.append(now_s)
        while seen and seen[0] <= now_s - self.policy.window_s:
            seen.popleft()
        if len(seen) >= self.policy.failures:
            del self._seen[address]
            return len(seen)
        self._prune(now_s)
        return None

    def _prune(self, now_s: float) -> None:
        if len(self._seen) > 10000:  # a scan from many addresses must not grow memory without bound
            for address in [a for a, s in self._seen.items() if not s or s[-1] <= now_s - self.policy.window_s]:
                del self._seen[address]
