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
import gzip
import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from imageops.models.common import ErrorReason
from imageops.services.backend import CancelToken, ImageBackend, RegistryAuth, TransferProgress
from imageops.services.errors import OperationError
from tests.containerd_node import ContainerdNode
from tests.testbed import Testbed, free_port  # noqa: F401 - re-exported to the tests


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


MiB = 1024 * 1024


def unique(registry: str, tag: str = "v1") -> str:
    """A reference in a repository no other test uses."""
    return f"{registry}/contract/{uuid.uuid4().hex[:12]}:{tag}"


def name_of(ref: str) -> str:
    """The repository part of host/repo:tag."""
    return ref.rpartition(":")[0]


def no_progress(_: TransferProgress) -> None:
    """A progress callback for tests that do not look at progress."""


def raises(reason: ErrorReason, call: Callable[[], Any]) -> OperationError:
    """Run ``call``; it must raise OperationError with ``reason``."""
    with pytest.raises(OperationError) as caught:
        call()
    assert caught.value.reason is reason, caught.value.message
    return caught.value


def pull(backend: ImageBackend, ref: str, **kwargs: Any) -> Any:
    """backend.pull with defaults for what a test does not care about."""
    options: dict[str, Any] = {
        "auth": None,
        "platform": None,
        "on_progress": no_progress,
        "cancel": CancelToken(),
    }
    options.update(kwargs)
    return backend.pull(ref, **options)


def push(backend: ImageBackend, ref: str, **kwargs: Any) -> Any:
    """backend.push with defaults for what a test does not care about."""
    options: dict[str, Any] = {"auth": None, "on_progress": no_progress, "cancel": CancelToken()}
    options.update(kwargs)
    return backend.push(ref, **options)


def rootfs_tar(size: int) -> bytes:
    """A tarball with ``size`` random bytes and a unique marker, so its layer is new."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("marker", uuid.uuid4().bytes), ("data.bin", os.urandom(size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


V2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _http(url: str, method: str, body: bytes = b"", content_type: str = "") -> Any:
    """One request to an open registry's v2 API; the response."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response


def _upload_blob(base: str, data: bytes) -> dict[str, Any]:
    """Upload ``data`` as a blob (POST then PUT); its descriptor fields."""
    location = _http(f"{base}/blobs/uploads/", "POST").headers["Location"]
    if location.startswith("/"):
        location = base.split("/v2/")[0] + location
    digest = _sha256(data)
    separator = "&" if "?" in location else "?"
    _http(f"{location}{separator}digest={digest}", "PUT", data, "application/octet-stream")
    return {"size": len(data), "digest": digest}


def _image_manifest(base: str, os_name: str, arch: str) -> bytes:
    """Upload a one-layer image's blobs for ``os_name``/``arch``; its schema 2 manifest."""
    layer_tar = rootfs_tar(1024)
    layer = _upload_blob(base, gzip.compress(layer_tar))
    config = _upload_blob(
        base,
        json.dumps(
            {
                "architecture": arch,
                "os": os_name,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [_sha256(layer_tar)]},
            }
        ).encode(),
    )
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": V2_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer}],
        }
    ).encode()


def _put_manifest(base: str, tag: str, manifest: bytes, media_type: str) -> str:
    _http(f"{base}/manifests/{tag}", "PUT", manifest, media_type)
    return _sha256(manifest)


def _check_stream(items: Any) -> None:
    for item in items:
        if "error" in item or "errorDetail" in item:
            raise RuntimeError(f"docker stream error during setup: {item}")


@dataclass
class Images:
    """Makes images for one test and removes its local tags afterwards.

    With a containerd ``node``, local images are made in Docker and copied
    into that node (docker save | ctr import), and cleanup happens there too.
    """

    api: Any
    refs: list[str] = field(default_factory=list)
    node: ContainerdNode | None = None

    def local(self, ref: str, size: int = 1024) -> str:
        """Import a new single-layer image as ``ref`` (on the node under test); its image id."""
        image_id = self._docker_image(ref, size)
        if self.node is not None:
            self.node.import_from_docker(self.api, ref)
        return image_id

    def _docker_image(self, ref: str, size: int) -> str:
        repository, _, tag = ref.rpartition(":")
        self.api.import_image_from_data(rootfs_tar(size), repository=repository, tag=tag)
        self.refs.append(ref)
        return str(self.api.inspect_image(ref)["Id"])

    def remote(self, ref: str, size: int = 1024, auth: RegistryAuth | None = None) -> str:
        """Put a new image at ``ref`` in its registry and delete it locally; its image id."""
        image_id = self._docker_image(ref, size)
        repository, _, tag = ref.rpartition(":")
        config = None
        if auth is not None:
            config = {"username": auth.username, "password": auth.password}
        _check_stream(
            self.api.push(repository, tag=tag, stream=True, decode=True, auth_config=config)
        )
        # Gone locally, layers included, so a pull has to transfer it.
        self.api.remove_image(ref)
        return image_id

    def remote_index(self, repository: str, platforms: tuple[str, ...]) -> dict[str, str]:
        """A multi-platform image ``repository:multi`` written into an open registry.

        dockerd 20.10 imports every image as its own architecture, so each
        platform's image (config, one layer, manifest) is uploaded through the
        registry's v2 API, then a manifest list naming them is PUT as ``:multi``.
        Returns each platform's manifest digest and, under "index", the list's.
        """
        registry, _, path = repository.partition("/")
        base = f"http://{registry}/v2/{path}"
        digests: dict[str, str] = {}
        entries = []
        for platform in platforms:
            os_name, _, arch = platform.partition("/")
            manifest = _image_manifest(base, os_name, arch)
            digests[platform] = _put_manifest(
                base, platform.replace("/", "-"), manifest, V2_MANIFEST
            )
            entries.append(
                {
                    "mediaType": V2_MANIFEST,
                    "size": len(manifest),
                    "digest": digests[platform],
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": entries}
        ).encode()
        digests["index"] = _put_manifest(base, "multi", index, MANIFEST_LIST)
        return digests

    def cleanup(self) -> None:
        """Delete every image this test made or pulled, with all its names (best effort).

        By image id: removing only the tags would leave the repo@digest names a pull adds.
        Every image here has unique content, so no other test shares it.
        """
        if self.node is not None:
            for ref in self.refs:
                self.node.remove_image(ref)
        ids = set()
        for ref in self.refs:
            with contextlib.suppress(docker.errors.APIError):
                ids.add(self.api.inspect_image(ref)["Id"])
        for image_id in ids:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_image(image_id, force=True)


@pytest.fixture
def images(docker_api: Any, request: pytest.FixtureRequest) -> Iterator[Images]:
    """Image factory for one test (on the containerd node the test's backend talks to)."""
    node = None
    if "node" in request.fixturenames:
        node = request.getfixturevalue("node")
    factory = Images(docker_api, node=node)
    yield factory
    factory.cleanup()


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
