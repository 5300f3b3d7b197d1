"""Fixtures for tests against the test bed's real dockerd and registries.

The test bed (hack/testenv.sh, then ``source .testenv/env.sh``) exports
DOCKER_HOST, IMAGEOPS_REGISTRY (open registry), IMAGEOPS_AUTH_REGISTRY
(htpasswd registry), IMAGEOPS_AUTH_USER and IMAGEOPS_AUTH_PASSWORD; read by
tests.testbed, which fails (CI=true) or skips when one is missing.

Two fakes inject network faults a real registry cannot produce on demand:
FakeSlowLink (a throttled TCP link in front of the real registry) and
FakeStalledRegistry (accepts connections, never answers).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import docker
import pytest

from imageops.services.backend import RegistryAuth
from tests.testbed import Testbed


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The test bed from the environment: fails under CI=true when a variable is missing."""
    return Testbed.from_env()


@pytest.fixture(scope="session")
def auth(testbed: Testbed) -> RegistryAuth:
    """The right credentials for the auth registry."""
    return RegistryAuth(testbed.auth_user, testbed.auth_password, testbed.auth_registry)


@pytest.fixture(scope="session")
def docker_api(testbed: Testbed) -> Iterator[Any]:
    """A plain docker SDK client for setting up and checking, independent of the backends."""
    api = docker.APIClient(base_url=testbed.docker_host, version="auto", timeout=120)
    yield api
    api.close()


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rootfs_tar(size: int) -> bytes:
    """A tarball with ``size`` random bytes and a unique marker, so its layer is new."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("marker", uuid.uuid4().bytes), ("data.bin", os.urandom(size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _check_stream(items: Any) -> None:
    for item in items:
        if "error" in item or "errorDetail" in item:
            raise RuntimeError(f"docker stream error during setup: {item}")


@dataclass
class Images:
    """Makes images for one test and removes its local tags afterwards."""

    api: Any
    refs: list[str] = field(default_factory=list)

    def local(self, ref: str, size: int = 1024) -> str:
        """Import a new single-layer image as ``ref``; its image id."""
        repository, _, tag = ref.rpartition(":")
        self.api.import_image_from_data(rootfs_tar(size), repository=repository, tag=tag)
        self.refs.append(ref)
        return str(self.api.inspect_image(ref)["Id"])

    def remote(self, ref: str, size: int = 1024, auth: RegistryAuth | None = None) -> str:
        """Put a new image at ``ref`` in its registry and delete it locally; its image id."""
        image_id = self.local(ref, size)
        repository, _, tag = ref.rpartition(":")
        config = None
        if auth is not None:
            config = {"username": auth.username, "password": auth.password}
        _check_stream(self.api.push(repository, tag=tag, stream=True, decode=True,
                                    auth_config=config))
        # Gone locally, layers included, so a pull has to transfer it.
        self.api.remove_image(ref)
        return image_id

    def cleanup(self) -> None:
        """Untag everything this test made or pulled (best effort)."""
        for ref in self.refs:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_image(ref, force=True)


@pytest.fixture
def images(docker_api: Any) -> Iterator[Images]:
    """Image factory for one test."""
    factory = Images(docker_api)
    yield factory
    factory.cleanup()


class _Listener:
    """A loopback TCP listener whose connections are handled on daemon threads."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
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

    def __init__(self, upstream: str, rate: int) -> None:
        self._upstream = upstream
        self._rate = rate
        self.bytes_down = 0  # registry -> client, to see a cancelled transfer stop
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        """Connect upstream and pump both directions with throttling."""
        host, _, port = self._upstream.rpartition(":")
        try:
            server = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            return
        self._keep(server)
        threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()
        self._pump(client, server, False)

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


class FakeDaemonLink:
    """A link (a unix socket) to the real dockerd that a test can cut mid-stream.

    ``cut()`` drops the open connections (a broken stream, daemon still up);
    ``close()`` also stops listening (the daemon looks gone).
    """

    def __init__(self, docker_host: str, directory: str) -> None:
        self._upstream = docker_host
        path = os.path.join(directory, f"link-{uuid.uuid4().hex[:8]}.sock")
        self.docker_host = f"unix://{path}"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(16)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                server = _connect(self._upstream)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        """Drop every open connection."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._server.close()
        os.unlink(self.docker_host.removeprefix("unix://"))
        self.cut()


def _connect(docker_host: str) -> socket.socket:
    """A connection to dockerd at unix://path or tcp://host:port."""
    if docker_host.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(docker_host.removeprefix("unix://"))
        return sock
    host, _, port = docker_host.removeprefix("tcp://").rpartition(":")
    return socket.create_connection((host, int(port)))


def _relay(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
