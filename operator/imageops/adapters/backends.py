"""Choosing the backend the agent uses: Docker (SDK or CLI), containerd, or CRI only."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from imageops.services.backend import ImageBackend
from imageops.settings import BACKEND_KINDS, DEFAULTS, RUNTIMES

log = logging.getLogger(__name__)

__all__ = ["BACKEND_KINDS", "RUNTIMES"]  # defined with the options of imageops run
DEFAULT_SOCKET_DIR = DEFAULTS.runtime_socket_dir
# Probed in this order, as OpenKruise's daemon does: the first socket found wins.
SOCKET_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("containerd", "containerd.sock"),
    ("containerd", "containerd/containerd.sock"),
    ("cri", "crio.sock"),
    ("cri-dockerd", "cri-dockerd.sock"),
    ("docker", "docker.sock"),
)


def make_backend(kind: str, docker_host: str | None) -> ImageBackend:
    """A Docker backend of ``kind`` ("sdk" or "cli") for ``docker_host`` (None: DOCKER_HOST)."""
    # Backends are imported when chosen: a Docker agent never loads grpc, nor the SDK for the CLI.
    if kind == "sdk":
        from imageops.adapters.docker_sdk import DockerSdkBackend

        return DockerSdkBackend(docker_host)
    if kind == "cli":
        from imageops.adapters.docker_cli import DockerCliBackend

        return DockerCliBackend(docker_host)
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}")


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime the agent talks to, and where."""

    runtime: str  # docker | containerd | cri
    endpoint: str | None  # unix://path; None: the Docker default (DOCKER_HOST)


def _by_name(path: str) -> str:
    name = os.path.basename(path)
    if name == "docker.sock":
        return "docker"
    if "containerd" in name and "cri-dockerd" not in name:
        return "containerd"
    return "cri"


def detect_runtime(
    runtime: str,
    endpoint: str | None,
    docker_host: str | None,
    socket_dir: str = DEFAULT_SOCKET_DIR,
) -> RuntimeChoice:
    """Resolve ``--runtime`` (auto: an explicit endpoint, a Docker host, then the sockets)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if endpoint and not endpoint.startswith("unix://"):
        endpoint = f"unix://{endpoint}"
    if runtime == "docker":
        return RuntimeChoice("docker", endpoint or docker_host)
    if runtime in ("containerd", "cri"):
        return RuntimeChoice(runtime, endpoint or _first_socket(socket_dir, runtime))
    if endpoint:
        return RuntimeChoice(_by_name(endpoint.removeprefix("unix://")), endpoint)
    if docker_host:
        return RuntimeChoice("docker", docker_host)
    for kind, relative in SOCKET_CANDIDATES:
        path = os.path.join(socket_dir, relative)
        if not os.path.exists(path):
            continue
        if kind == "cri-dockerd":
            # cri-dockerd keeps images in dockerd: the Docker API can tag and push them.
            docker_sock = os.path.join(socket_dir, "docker.sock")
            if os.path.exists(docker_sock):
                return RuntimeChoice("docker", f"unix://{docker_sock}")
            kind = "cri"
        return RuntimeChoice(kind, f"unix://{path}")
    return RuntimeChoice("docker", None)


def _first_socket(socket_dir: str, runtime: str) -> str:
    for kind, relative in SOCKET_CANDIDATES:
        path = os.path.join(socket_dir, relative)
        if (kind == runtime or runtime == "cri") and kind != "docker" and os.path.exists(path):
            return f"unix://{path}"
    default = "containerd/containerd.sock" if runtime == "containerd" else "crio.sock"
    return f"unix://{os.path.join(socket_dir, default)}"


def make_runtime_backend(choice: RuntimeChoice, docker_backend: str) -> ImageBackend:
    """The backend for ``choice``; Docker through ``docker_backend`` (sdk or cli)."""
    log.info("container runtime: %s at %s", choice.runtime, choice.endpoint or "DOCKER_HOST")
    if choice.runtime == "docker":
        return make_backend(docker_backend, choice.endpoint)
    assert choice.endpoint is not None
    from imageops.adapters.containerd import ContainerdBackend

    return ContainerdBackend(choice.endpoint, containerd_api=choice.runtime == "containerd")
