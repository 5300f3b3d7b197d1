"""Fault injectors: fakes for conditions the real parts cannot be made to produce.

``FakeSlowLink`` is a TCP link in front of a real registry that slows every
transfer down, so that a pull is reliably still running when a test kills the
agent, deletes the operation or cancels the call; it counts the bytes it
carried and its open connections, so a test can see an aborted transfer stop.
``FakeStalledRegistry`` accepts connections and never answers (a hung registry).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Self


class _Listener:
    """A loopback TCP listener whose connections are handled on daemon threads."""

    def __init__(self, port: int = 0) -> None:
        self._server = socket.create_server(("127.0.0.1", port))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def handle(self, client: socket.socket) -> None:
        """Serve one connection (subclasses)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed = True
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeStalledRegistry(_Listener):
    """Accepts connections and reads requests but never answers: a hung registry."""

    def handle(self, client: socket.socket) -> None:
        """Swallow whatever arrives until the peer or the fake closes."""
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass


class FakeSlowLink(_Listener):
    """A TCP link to a real registry carrying at most ``rate`` bytes/s each way."""

    def __init__(self, upstream: str, rate: int, port: int = 0) -> None:
        self._upstream = upstream
        self._rate = rate
        self.bytes_down = 0  # registry -> client, to see a cancelled transfer stop
        self.active = 0  # open client connections, to see an aborted pull hang up
        super().__init__(port)

    def handle(self, client: socket.socket) -> None:
        """Connect upstream and pump both directions with throttling."""
        host, _, port = self._upstream.rpartition(":")
        try:
            server = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            return
        self._keep(server)
        with self._lock:
            self.active += 1
        threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()
        self._pump(client, server, False)
        with self._lock:
            self.active -= 1

    def _pump(self, source: socket.socket, sink: socket.socket, down: bool) -> None:
        chunk = max(1, self._rate // 20)
        with contextlib.suppress(OSError):
            while data := source.recv(chunk):
                sink.sendall(data)
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
                time.sleep(len(data) / self._rate)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class FakeRateLimitedRegistry(_Listener):
    """Answers every request with 429 TOOMANYREQUESTS, as Docker Hub does over its limit.

    The bed's registry (distribution) has no rate limit to exhaust, so this fake stands in.
    """

    BODY = (
        b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull '
        b'rate limit. You may increase the limit by authenticating and upgrading"}]}'
    )

    def __init__(self, port: int = 0) -> None:
        self.requests = 0
        super().__init__(port)

    def handle(self, client: socket.socket) -> None:
        """Read one request head, answer 429, close."""
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            with self._lock:
                self.requests += 1
            head = (
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                f"Retry-After: 1\r\nContent-Length: {len(self.BODY)}\r\nConnection: close\r\n\r\n"
            )
            client.sendall(head.encode() + self.BODY)
        with contextlib.suppress(OSError):
            client.close()
