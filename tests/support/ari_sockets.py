"""For tests of the ARI request websockets (callctl.ari.transport): a cuttable proxy that can cut one of
the client's connections alone, found by the client's local port."""

from __future__ import annotations

import socket

from tests.support.proxy import CuttableProxy


class OneSocketProxy(CuttableProxy):
    def cut_client_port(self, port: int) -> None:
        """Close the connection the client opened from local ``port`` (its relay closes the upstream side)."""
        with self._lock:
            mine = [s for s in self._open if _peer_port(s) == port]
        if not mine:
            raise AssertionError(f"no connection from client port {port} through the proxy")
        self._close(*mine)


def _peer_port(sock: socket.socket) -> int:
    try:
        return int(sock.getpeername()[1])
    except OSError:
        return -1
