"""Access to the real test bed (hack/testenv.sh) shared by integration and e2e tests.

When the bed is missing, a test fails under CI (or IMAGEOPS_REQUIRE_TESTENV=1, set by
`make test`) and is skipped otherwise, with the reason.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import tarfile
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(names: list[str]) -> dict[str, str]:
    """The named environment variables, or fail/skip saying which are missing."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        why = (
            f"test bed not up (missing {', '.join(missing)}): run `make testenv-up` "
            "and `source .testenv/env.sh`"
        )
        if os.environ.get("CI") == "true" or os.environ.get("IMAGEOPS_REQUIRE_TESTENV"):
            pytest.fail(why)
        pytest.skip(why)
    return {n: os.environ[n] for n in names}


@dataclass(frozen=True)
class Testbed:
    """Addresses and credentials of the test bed's parts."""

    __test__ = False  # not a test class, despite the name

    docker_host: str
    registry: str
    auth_registry: str
    auth_user: str
    auth_password: str

    @classmethod
    def from_env(cls) -> Testbed:
        """Read .testenv/env.sh's variables."""
        env = require(
            [
                "DOCKER_HOST",
                "IMAGEOPS_REGISTRY",
                "IMAGEOPS_AUTH_REGISTRY",
                "IMAGEOPS_AUTH_USER",
                "IMAGEOPS_AUTH_PASSWORD",
            ]
        )
        return cls(
            env["DOCKER_HOST"],
            env["IMAGEOPS_REGISTRY"],
            env["IMAGEOPS_AUTH_REGISTRY"],
            env["IMAGEOPS_AUTH_USER"],
            env["IMAGEOPS_AUTH_PASSWORD"],
        )

    def docker(
        self, *args: str, check: bool = True, input_bytes: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the real docker CLI against the bed's daemon."""
        return subprocess.run(
            ["docker", "-H", self.docker_host, *args],
            input=input_bytes,
            capture_output=True,
            check=check,
            timeout=300,
        )

    def make_image(self, ref: str, size_bytes: int = 4096, layers: int = 1) -> str:
        """Create a local image with random content under ``ref`` (no registry needed)."""
        self.docker("import", "-", ref, input_bytes=_tarball(size_bytes))
        for i in range(1, layers):
            # Each extra layer: an import-based image with the previous content is not
            # layered, so build on top with a tiny Dockerfile instead.
            build = f"FROM {ref}\nCOPY blob{i} /blob{i}\n"
            self._build(ref, build, {f"blob{i}": os.urandom(max(size_bytes // layers, 1))})
        return ref

    def _build(self, ref: str, dockerfile: str, files: dict[str, bytes]) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        self.docker("build", "--network", "host", "-q", "-t", ref, "-", input_bytes=buf.getvalue())

    def image_id(self, ref: str) -> str | None:
        """The local image ID of ``ref``, or None."""
        out = self.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return out.stdout.decode().strip() if out.returncode == 0 else None

    def push_open(self, ref: str) -> None:
        """Push to the open registry with the docker CLI."""
        self.docker("push", ref)

    def rmi(self, *refs: str) -> None:
        """Remove local tags (missing ones are fine)."""
        self.docker("rmi", "--no-prune", *refs, check=False)

    def unique(self, registry: str | None = None, tag: str = "1.0") -> str:
        """A fresh repository reference in ``registry`` (default: the open one)."""
        return f"{registry or self.registry}/t-{uuid.uuid4().hex[:10]}:{tag}"

    def dockerconfigjson(self, password: str | None = None) -> str:
        """A .dockerconfigjson document for the auth registry."""
        secret = f"{self.auth_user}:{password or self.auth_password}"
        auth = base64.b64encode(secret.encode()).decode()
        return json.dumps({"auths": {self.auth_registry: {"auth": auth}}})

    def registry_digest(self, ref: str, auth: bool = False) -> str | None:
        """The manifest digest the registry serves for host/repo:tag (None when absent)."""
        host, _, rest = ref.partition("/")
        repo, _, tag = rest.rpartition(":")
        req = urllib.request.Request(
            f"http://{host}/v2/{repo}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": MANIFEST_TYPES},
        )
        if auth:
            token = base64.b64encode(f"{self.auth_user}:{self.auth_password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return str(resp.headers.get("Docker-Content-Digest") or "") or None
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise


def _tarball(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("id")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    return buf.getvalue()
