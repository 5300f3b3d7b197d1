"""Fault injectors: fakes for conditions the real parts cannot be made to produce.

``ThrottledProxy`` is a TCP proxy in front of a real registry that slows every
transfer down to a set rate, so that a pull is reliably still running when a
test kills the agent or deletes the operation. It also counts the open
connections, so a test can see that an aborted pull really stopped talking
to the registry.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ThrottledProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` at ``rate`` bytes per second per connection."""

    def __init__(self, upstream: str, rate: int = 256 * 1024, port: int = 0) -> None:
        host, _, upstream_port = upstream.partition(":")
        self.upstream = (host, int(upstream_port))
        self.rate = rate
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self.active = 0
        self.bytes_down = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        """host:port of the proxy (use it as the registry name)."""
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self.active += 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        try:
            while True:
                data = src.recv(16 * 1024)
                if not data:
                    break
                dst.sendall(data)
                if throttle:
                    with self._lock:
                        self.bytes_down += len(data)
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if throttle:
                with self._lock:
                    self.active -= 1
                src.close()
                dst.close()

    def close(self) -> None:
        """Stop accepting; open connections end when their peers close."""
        self._closed = True
        self._server.close()
