"""Live progress of a CRI pull, read from containerd's content store.

CRI PullImage answers only when the pull is over. Meanwhile containerd keeps
one ingest per blob being written (``layer-sha256:...``, with offset and
total); polling ``Content.ListStatuses`` gives the bytes so far. Ingests that
existed before the pull started belong to someone else and are left out.
When the pull is done, the image's manifest gives the exact layer count.
"""

from __future__ import annotations

import contextlib
import json
import platform as host_platform
from typing import Any

import grpc

from imageops.adapters.cri_grpc import Connection
from imageops.adapters.grpcgen.containerd.services.content.v1 import content_pb2
from imageops.adapters.grpcgen.containerd.services.images.v1 import images_pb2
from imageops.services.backend import ProgressCallback, TransferProgress

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def node_platform() -> str:
    """This node's os/arch as OCI writes it (what CRI pulls)."""
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return f"linux/{arch}"


class PullWatcher:
    """Polls the content store's ingests during one pull and reports their sums."""

    def __init__(self, conn: Connection, on_progress: ProgressCallback) -> None:
        self._conn = conn
        self._on_progress = on_progress
        self._foreign = {s.ref for s in self._statuses()}
        self._active: dict[str, tuple[int, int]] = {}
        self._done: dict[str, int] = {}
        self._last: TransferProgress | None = None

    def _statuses(self) -> list[Any]:
        try:
            answer = self._conn.content.ListStatuses(
                content_pb2.ListStatusesRequest(), timeout=5.0, metadata=self._conn.metadata
            )
        except grpc.RpcError:
            return []  # progress is best effort; the pull itself reports errors
        return list(answer.statuses)

    def poll(self) -> None:
        """Read the ingests once and report when anything moved."""
        seen = {}
        for status in self._statuses():
            if status.ref.startswith("layer-") and status.ref not in self._foreign:
                seen[status.ref] = (int(status.offset), int(status.total))
        for ref, (_, total) in self._active.items():
            if ref not in seen:
                self._done[ref] = total  # the ingest was committed
        self._active = seen
        done_bytes = sum(self._done.values()) + sum(offset for offset, _ in seen.values())
        total = sum(self._done.values()) + sum(t for _, t in seen.values())
        progress = TransferProgress(
            layers_done=len(self._done),
            layers_total=len(self._done) + len(seen),
            bytes_done=min(done_bytes, total),
            bytes_total=total,
        )
        if progress != self._last and progress.layers_total:
            self._last = progress
            self._on_progress(progress)

    def stop(self) -> None:
        """Nothing to release; kept for symmetry with the pull's try/finally."""

    def finish(self, store: Any, name: str) -> None:
        """Report the final totals from the pulled image's manifest."""
        layers = image_layers(store, self._conn, name)
        if layers is None:
            return
        size = sum(layers)
        self._on_progress(TransferProgress(len(layers), len(layers), size, size))


def image_layers(store: Any, conn: Connection, name: str) -> list[int] | None:
    """Layer sizes of the image record ``name`` for this node (None when unreadable)."""
    with contextlib.suppress(grpc.RpcError, ValueError, KeyError):
        record = conn.images.Get(
            images_pb2.GetImageRequest(name=name), timeout=10.0, metadata=conn.metadata
        ).image
        desc = {"mediaType": record.target.media_type, "digest": record.target.digest}
        document = json.loads(store.read(desc["digest"]))
        if desc["mediaType"] in INDEX_TYPES or "manifests" in document:
            child = pick_platform(document.get("manifests", []), node_platform())
            if child is None:
                return None
            document = json.loads(store.read(child["digest"]))
        return [int(layer["size"]) for layer in document.get("layers", [])]
    return None


def pick_platform(manifests: list[dict[str, Any]], platform: str) -> dict[str, Any] | None:
    """The index entry for ``platform`` (os/arch), as containerd's default matcher picks it."""
    os_name, _, arch = platform.partition("/")
    for entry in manifests:
        p = entry.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch:
            return entry
    return None
