"""sd_notify for Type=notify units: READY, RELOADING, STOPPING, STATUS and the watchdog ping."""

from __future__ import annotations

import asyncio
import os
import socket


def notify(*states: str) -> bool:
    """Send states to systemd if it asked for them (NOTIFY_SOCKET); a no-op otherwise."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the unit's WatchdogSec, or None when no watchdog is configured for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog_pings(interval_s: float) -> None:
    """Tell systemd the process is alive every ``interval_s`` (a stalled loop stops the pings)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)
