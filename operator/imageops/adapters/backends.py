"""Choosing the Docker backend the agent uses."""

from __future__ import annotations

from imageops.adapters.docker_cli import DockerCliBackend
from imageops.adapters.docker_sdk import DockerSdkBackend
from imageops.services.backend import ImageBackend

BACKEND_KINDS: tuple[str, ...] = ("sdk", "cli")


def make_backend(kind: str, docker_host: str | None) -> ImageBackend:
    """A backend of ``kind`` ("sdk" or "cli") for ``docker_host`` (None: DOCKER_HOST)."""
    if kind == "sdk":
        return DockerSdkBackend(docker_host)
    if kind == "cli":
        return DockerCliBackend(docker_host)
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(BACKEND_KINDS)}")
