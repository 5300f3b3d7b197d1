"""The contract between the agent and a Docker backend (SDK or command line).

Backends are blocking: the agent calls them in a thread pool sized to its
concurrency limit. They raise :class:`imageops.services.errors.OperationError`
for every failure, including errors the Docker daemon reports inside a
progress stream, so the caller never has to read raw Docker output.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from imageops.models.common import ErrorReason
from imageops.services.errors import OperationError


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; never logged, never written to status."""

    username: str
    password: str
    registry: str

    def __repr__(self) -> str:
        return f"RegistryAuth(registry={self.registry!r}, username=<redacted>)"


@dataclass(frozen=True)
class ImageInfo:
    """What the daemon knows of a local image."""

    image_id: str
    repo_digests: tuple[str, ...] = ()
    repo_tags: tuple[str, ...] = ()
    size_bytes: int = 0

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> ImageInfo:
        """From the daemon's image-inspect document (API and ``docker image inspect``)."""
        return cls(
            image_id=str(data.get("Id", "")),
            repo_digests=tuple(data.get("RepoDigests") or ()),
            repo_tags=tuple(data.get("RepoTags") or ()),
            size_bytes=int(data.get("Size") or 0),
        )


@dataclass(frozen=True)
class LayerCount:
    """Bytes of one layer of a pull or push."""

    id: str
    bytes_done: int = 0
    bytes_total: int = 0
    done: bool = False


@dataclass
class TransferProgress:
    """Layer and byte counts of a pull or push, summed over layers, and per layer."""

    layers_done: int = 0
    layers_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    layers: tuple[LayerCount, ...] = ()


ProgressCallback = Callable[[TransferProgress], None]


@dataclass
class CancelToken:
    """Lets another thread stop a running backend call (deletion, timeout).

    A backend registers a closer (e.g. "close this HTTP response" or "kill
    this process") while it blocks; ``cancel`` runs it, so a stalled stream
    is interrupted even when no further progress item arrives.
    """

    _event: threading.Event = field(default_factory=threading.Event)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    reason: str = ""

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the call: run every registered closer once."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            closers, self._closers = self._closers, []
        for close in closers:
            with contextlib.suppress(Exception):
                close()

    def on_cancel(self, closer: Callable[[], None]) -> None:
        """Register a closer; runs it at once if the token is already cancelled."""
        with self._lock:
            if not self._event.is_set():
                self._closers.append(closer)
                return
        closer()


@dataclass(frozen=True)
class PullResult:
    """Outcome of a pull: the registry digest and the local image."""

    digest: str | None
    image: ImageInfo
    cache_hit: bool


@dataclass(frozen=True)
class PushResult:
    """Outcome of a push: the digest the registry reported."""

    digest: str
    size_bytes: int = 0


class ImageBackend(Protocol):
    """Blocking operations on one Docker daemon."""

    name: str

    def ping(self) -> None:
        """Raise OperationError(DaemonUnavailable) unless the daemon answers."""

    def inspect(self, ref: str) -> ImageInfo | None:
        """The local image named ``ref``, or None when there is none."""

    def pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        platform: str | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PullResult:
        """Pull ``ref``; errors inside the progress stream raise OperationError."""

    def push(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PushResult:
        """Push ``ref``; the digest comes from the aux item, the status line, then RepoDigests."""

    def tag(self, source: str, target: str) -> None:
        """Point ``target`` at the image ``source`` names (moves an existing tag)."""

    def remove(self, ref: str) -> None:
        """Untag ``ref`` (the image itself stays if other names use it); missing is not an error."""

    def registry_digest(self, ref: str, *, auth: RegistryAuth | None) -> str:
        """Ask the registry (Docker distribution endpoint) which digest ``ref`` resolves to."""


def require_image(backend: ImageBackend, ref: str) -> ImageInfo:
    """The local image ``ref`` after a transfer; NotFound when the daemon lost it."""
    info = backend.inspect(ref)
    if info is None:
        raise OperationError(ErrorReason.NOT_FOUND, f"No such image: {ref} (after transfer)")
    return info
