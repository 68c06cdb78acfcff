"""A TCP proxy a test can cut (asyncpg's style of network failure tests): every connection through it is
relayed to ``upstream`` until ``cut()`` closes them all; ``fail_next(n)`` lets each of the next ``n``
connections carry the client's first bytes and half of the first answer, then closes it, like a
server that goes away in the middle of an answer."""

from __future__ import annotations

import socket
import threading

from tests.support.waiting import wait_for


class CuttableProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._fail_next = 0
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                one_exchange = self._fail_next > 0
                self._fail_next -= 1 if one_exchange else 0
                self._open |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, one_exchange), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, one_exchange: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if one_exchange:  # half of the first answer, then the server is gone
                    dst.sendall(data[:max(1, len(data) // 2)])
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._open.discard(s)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail_next = count

    def cut(self) -> None:
        """Close every connection open now (the events websocket included)."""
        with self._lock:
            socks = list(self._open)
        self._close(*socks)

    def wait_for_connections(self, count: int, timeout_s: float = 10) -> None:
        wait_for(lambda: self.accepted >= count, timeout_s, f"{count} connections through the proxy")

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
