"""Push an image from containerd's content store to a registry.

Manifests and config are always in the content store; layer blobs may not
be: with ``discard_unpacked_layers`` (the default on EKS and GKE) containerd
drops them once unpacked. A missing blob is then mounted from another
repository of the target registry that has it, or streamed from a registry
the image was pulled from (the other names of the same manifest); failing
that, the push fails saying so. The manifest goes last, as its exact bytes,
and the digest the registry answers must be the local one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc

from imageops.adapters.containerd_progress import INDEX_TYPES
from imageops.adapters.cri_grpc import Connection, is_code, rpc_error
from imageops.adapters.grpcgen.containerd.services.content.v1 import content_pb2
from imageops.adapters.progress import cancelled_error
from imageops.adapters.registry_http import RegistryClient
from imageops.adapters.registry_push import RegistrySession
from imageops.models.common import ErrorReason
from imageops.services.backend import (
    CancelToken,
    ProgressCallback,
    PushResult,
    RegistryAuth,
    TransferProgress,
)
from imageops.services.errors import OperationError
from imageops.services.reference import ImageRef

_READ_CHUNK = 1024 * 1024


class ContentStore:
    """Reads blobs from containerd's content store (namespace k8s.io)."""

    def __init__(self, conn: Connection, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout

    def has(self, digest: str) -> bool:
        """Whether the blob is present (not discarded)."""
        try:
            self._conn.content.Info(
                content_pb2.InfoRequest(digest=digest),
                timeout=self._timeout,
                metadata=self._conn.metadata,
            )
        except grpc.RpcError as exc:
            if is_code(exc, grpc.StatusCode.NOT_FOUND):
                return False
            raise rpc_error(exc, f"content info {digest}", self._conn.endpoint) from exc
        return True

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes, streamed."""
        request = content_pb2.ReadContentRequest(digest=digest)
        try:
            for answer in self._conn.content.Read(request, metadata=self._conn.metadata):
                yield answer.data
        except grpc.RpcError as exc:
            raise rpc_error(exc, f"read content {digest}", self._conn.endpoint) from exc

    def read(self, digest: str) -> bytes:
        """The whole blob (manifests and configs: small)."""
        return b"".join(self.chunks(digest))


class _Push:
    """One push: blobs first, then manifests, with progress over the layers."""

    def __init__(
        self,
        store: ContentStore,
        session: RegistrySession,
        sources: list[RegistrySession],
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> None:
        self.store, self.session, self.sources = store, session, sources
        self.on_progress, self.cancel = on_progress, cancel
        self.progress = TransferProgress()
        self.uploaded = 0

    def manifest(self, desc: dict[str, Any], reference: str) -> str:
        """Push the manifest (or index) ``desc`` and what it references; the served digest."""
        data = self._manifest_bytes(desc["digest"])
        document = json.loads(data)
        media_type = desc.get("mediaType") or document.get("mediaType", "")
        if media_type in INDEX_TYPES:
            for child in document.get("manifests", []):
                self.manifest(child, child["digest"])
        else:
            layers = document.get("layers", [])
            self.progress.layers_total += len(layers)
            self.progress.bytes_total += sum(int(x["size"]) for x in layers)
            self._report()
            self.blob(document["config"], layer=False)
            for layer in layers:
                self.blob(layer, layer=True)
        served = self.session.put_manifest(reference, media_type, data)
        if served and served != desc["digest"]:
            raise OperationError(
                ErrorReason.DIGEST_MISMATCH,
                f"pushed {desc['digest']} but the registry answered {served}",
            )
        return served or desc["digest"]

    def _manifest_bytes(self, digest: str) -> bytes:
        if self.store.has(digest):
            return self.store.read(digest)
        for source in self.sources:
            try:
                return b"".join(source.manifest_chunks(digest))
            except OperationError:
                continue
        raise OperationError(
            ErrorReason.NOT_FOUND,
            f"manifest {digest} is neither in containerd's content store "
            "nor in a registry the image came from",
        )

    def blob(self, desc: dict[str, Any], *, layer: bool) -> None:
        """Make sure the target repository has the blob ``desc``."""
        if self.cancel.cancelled:
            raise cancelled_error(self.cancel, "push")
        digest, size = desc["digest"], int(desc["size"])
        if self.session.has_blob(digest):
            self._advance(size)
        else:
            self._transfer(digest, size)
        if layer:
            self.progress.layers_done += 1
            self._report()

    def _transfer(self, digest: str, size: int) -> None:
        same_registry = [
            s.ref.repository
            for s in self.sources
            if s.ref.registry == self.session.ref.registry
            and s.ref.repository != self.session.ref.repository
        ]
        location = self.session.mount_or_start(digest, same_registry[0] if same_registry else None)
        if location is None:
            self._advance(size)  # mounted: nothing travelled
            return
        if self.store.has(digest):
            self.session.upload(location, digest, size, self._counted(self.store.chunks(digest)))
            return
        errors: list[OperationError] = []
        for source in self.sources:
            try:
                chunks = source.blob_chunks(digest)
                first = next(chunks, b"")
            except OperationError as err:
                where = f"{source.ref.registry}/{source.ref.repository}"
                errors.append(OperationError(err.reason, f"{where}: {err.message}"))
                continue
            self.session.upload(location, digest, size, self._counted(_chain(first, chunks)))
            return
        where = (
            "; ".join(e.message for e in errors) or "no registry name of this image to fetch from"
        )
        # A source that is down may come back (retryable); one without the blob will not.
        retryable = [e.reason for e in errors if e.retryable]
        raise OperationError(
            retryable[0] if retryable else ErrorReason.NOT_FOUND,
            f"layer {digest} is not in containerd's content store (discarded after unpacking: "
            f"discard_unpacked_layers) and could not be fetched from the image's source "
            f"registry: {where}",
        )

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if self.cancel.cancelled:
                raise cancelled_error(self.cancel, "push")
            self._count(len(chunk))
            yield chunk

    def _count(self, n: int) -> None:
        self.uploaded += n
        self._advance(n)

    def _advance(self, n: int) -> None:
        self.progress.bytes_done = min(self.progress.bytes_done + n, self.progress.bytes_total)
        self._report()

    def _report(self) -> None:
        p = self.progress
        self.on_progress(
            TransferProgress(p.layers_done, p.layers_total, p.bytes_done, p.bytes_total)
        )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def push_image(
    store: ContentStore,
    registry: RegistryClient,
    ref: ImageRef,
    target: Any,
    sources: list[ImageRef],
    *,
    auth: RegistryAuth | None,
    on_progress: ProgressCallback,
    cancel: CancelToken,
) -> PushResult:
    """Push the image whose record target is ``target`` as ``ref``."""
    session = RegistrySession(registry, ref, auth, cancel)
    repositories = {(s.registry, s.repository): s for s in sources}
    repositories.pop((ref.registry, ref.repository), None)
    source_sessions = [RegistrySession(registry, s, auth, cancel) for s in repositories.values()]
    push = _Push(store, session, source_sessions, on_progress, cancel)
    desc = {"mediaType": target.media_type, "digest": target.digest, "size": target.size}
    try:
        digest = push.manifest(desc, ref.tag or "latest")
    finally:
        session.close()
        for s in source_sessions:
            s.close()
    return PushResult(digest=digest, size_bytes=push.uploaded)
