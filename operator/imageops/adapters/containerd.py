"""ImageBackend on a CRI runtime, with containerd's own API where the runtime is containerd.

Pulls go through the CRI ImageService, so images land where the kubelet
looks (containerd's ``k8s.io`` namespace; a pull through dockerd does not).
Tags are containerd image records (``Images.Create``/``Update``); untagging
deletes one record (``Images.Delete``) and never calls CRI ``RemoveImage``,
which would remove every name of the image. Pushes read the content store
(:mod:`imageops.adapters.containerd_push`). On a CRI-only runtime (CRI-O, or
``--runtime cri``) Pull works and Tag/Push fail at once with Unsupported.

Blocking, like the Docker backends: the agent calls it in its thread pool.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc

from imageops.adapters.containerd_progress import PullWatcher, node_platform
from imageops.adapters.containerd_push import ContentStore, push_image
from imageops.adapters.cri_grpc import Connection, is_code, rpc_error
from imageops.adapters.grpcgen.containerd.services.images.v1 import images_pb2
from imageops.adapters.grpcgen.cri.v1 import api_pb2
from imageops.adapters.progress import cancelled_error
from imageops.adapters.registry_http import RegistryClient
from imageops.models.common import ErrorReason
from imageops.services.backend import (
    CancelToken,
    ImageInfo,
    ProgressCallback,
    PullResult,
    PushResult,
    RegistryAuth,
    require_image,
)
from imageops.services.errors import OperationError
from imageops.services.reference import ImageRef, is_image_id, parse_reference

# CRI's own label on the image records it manages.
_CRI_LABEL = {"io.cri-containerd.image": "managed"}
_FIELD_MASK_TARGET = {"paths": ["target"]}


def full_name(ref: ImageRef) -> str:
    """The name containerd stores: registry and repository in full, ``:latest`` by default."""
    text = f"{ref.registry}/{ref.repository}"
    if ref.tag is not None:
        text += f":{ref.tag}"
    if ref.digest is not None:
        text += f"@{ref.digest}"
    return text if ref.tag or ref.digest else f"{text}:latest"


class ContainerdBackend:
    """ImageBackend through CRI (every action) and containerd's API (Tag, Push, progress)."""

    def __init__(
        self,
        endpoint: str,
        *,
        containerd_api: bool = True,
        timeout: float = 60.0,
        registry: RegistryClient | None = None,
    ) -> None:
        """Talk to the runtime at ``endpoint`` (``unix:///run/containerd/containerd.sock``).

        ``containerd_api`` False treats the runtime as CRI-only (CRI-O). ``timeout``
        bounds every call but the pull and the push, which a CancelToken stops.
        """
        self.name = "containerd" if containerd_api else "cri"
        self._conn = Connection(endpoint)
        self._containerd = containerd_api
        self._timeout = timeout
        self._registry = registry or RegistryClient()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The runtime's gRPC target."""
        return self._conn.endpoint

    def _call(self, method: Any, request: Any, what: str, *, containerd: bool = False) -> Any:
        metadata = self._conn.metadata if containerd else None
        try:
            return method(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise rpc_error(exc, what, self.endpoint) from exc

    def _require_containerd(self, action: str) -> None:
        if not self._containerd:
            raise OperationError(
                ErrorReason.UNSUPPORTED,
                f"{action} is not possible on the CRI-only runtime at {self.endpoint}: CRI has "
                "no call to tag an image or read its content; only Pull is supported there",
            )

    def ping(self) -> None:
        """Raise OperationError(DaemonUnavailable) unless the runtime answers CRI."""
        self._call(self._conn.cri_runtime.Version, api_pb2.VersionRequest(), "CRI Version")
        if self._containerd:
            self._call(self._conn.version.Version, _empty(), "containerd Version", containerd=True)

    def inspect(self, ref: str) -> ImageInfo | None:
        """The image CRI knows as ``ref`` (name or image ID), or None."""
        name = ref if is_image_id(ref) else full_name(parse_reference(ref))
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=name))
        answer = self._call(self._conn.cri_images.ImageStatus, request, f"image status {ref}")
        image = answer.image
        if not answer.HasField("image") or not image.id:
            return None
        return ImageInfo(
            image_id=image.id,
            repo_digests=tuple(image.repo_digests),
            repo_tags=tuple(image.repo_tags),
            size_bytes=int(image.size),
        )

    def pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        platform: str | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PullResult:
        """Pull ``ref`` through CRI PullImage, reporting content-store progress meanwhile."""
        parsed = parse_reference(ref)
        if platform and platform != node_platform():
            raise OperationError(
                ErrorReason.UNSUPPORTED,
                f"CRI pulls only the node's platform ({node_platform()}), not {platform}",
            )
        if cancel.cancelled:
            raise cancelled_error(cancel, "pull")
        name = full_name(parsed)
        before = self.inspect(name)
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=name), auth=_auth(auth))
        future = self._conn.cri_images.PullImage.future(request)
        cancel.on_cancel(future.cancel)
        watcher = PullWatcher(self._conn, on_progress) if self._containerd else None
        try:
            self._wait(future, watcher, cancel, ref)
        finally:
            if watcher is not None:
                watcher.stop()
        image = require_image(self, name)
        if watcher is not None:
            watcher.finish(self._store(), name)
        digest = _repo_digest(image, parsed)
        cache_hit = before is not None and before.image_id == image.image_id
        return PullResult(digest=digest, image=image, cache_hit=cache_hit)

    def _wait(
        self, future: Any, watcher: PullWatcher | None, cancel: CancelToken, ref: str
    ) -> None:
        while True:
            try:
                future.result(timeout=0.25)
                return
            except grpc.FutureTimeoutError:
                if watcher is not None:
                    watcher.poll()
            except grpc.FutureCancelledError as exc:
                raise cancelled_error(cancel, "pull") from exc
            except grpc.RpcError as exc:
                if cancel.cancelled:
                    raise cancelled_error(cancel, "pull") from exc
                raise self._pull_error(exc, ref) from exc

    def _pull_error(self, exc: grpc.RpcError, ref: str) -> OperationError:
        """A broken connection to a runtime that still answers is the link, not the runtime."""
        error = rpc_error(exc, f"pull {ref}", self.endpoint)
        if error.reason is not ErrorReason.DAEMON_UNAVAILABLE:
            return error
        try:
            self.ping()
        except OperationError as down:
            return down
        return OperationError(
            ErrorReason.NETWORK,
            f"pull {ref}: the connection to the runtime at {self.endpoint} broke: {error.message}",
        )

    def _store(self) -> ContentStore:
        return ContentStore(self._conn, self._timeout)

    def _record(self, ref: str) -> Any:
        """containerd's image record for ``ref`` (a name, or an image ID CRI knows)."""
        if is_image_id(ref):
            info = self.inspect(ref)
            if info is None:
                raise OperationError(ErrorReason.NOT_FOUND, f"No such image: {ref}")
            names = [*info.repo_tags, *info.repo_digests, info.image_id]
        else:
            names = [full_name(parse_reference(ref))]
        for name in names:
            try:
                request = images_pb2.GetImageRequest(name=name)
                return self._conn.images.Get(
                    request, timeout=self._timeout, metadata=self._conn.metadata
                ).image
            except grpc.RpcError as exc:
                if not is_code(exc, grpc.StatusCode.NOT_FOUND):
                    raise rpc_error(exc, f"image {name}", self.endpoint) from exc
        raise OperationError(ErrorReason.NOT_FOUND, f"No such image: {ref}")

    def tag(self, source: str, target: str) -> None:
        """Point ``target`` at the image ``source`` names (moves an existing tag)."""
        self._require_containerd("Tag")
        target_name = full_name(parse_reference(target))
        record = self._record(source)
        image = images_pb2.Image(name=target_name, target=record.target, labels=_CRI_LABEL)
        with self._lock:
            try:
                self._conn.images.Create(
                    images_pb2.CreateImageRequest(image=image),
                    timeout=self._timeout,
                    metadata=self._conn.metadata,
                )
            except grpc.RpcError as exc:
                if not is_code(exc, grpc.StatusCode.ALREADY_EXISTS):
                    raise rpc_error(exc, f"tag {target}", self.endpoint) from exc
                request = images_pb2.UpdateImageRequest(image=image, update_mask=_FIELD_MASK_TARGET)
                self._call(self._conn.images.Update, request, f"retag {target}", containerd=True)
        self._await_cri(target_name, record.target.digest)

    def _await_cri(self, name: str, manifest_digest: str) -> None:
        """Wait until CRI (updated from containerd's events) shows ``name`` on the new image."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            info = self.inspect(name)
            if info is not None and any(d.endswith(manifest_digest) for d in info.repo_digests):
                return
            if info is not None and not info.repo_digests:
                return
            time.sleep(0.05)

    def remove(self, ref: str) -> None:
        """Delete the one image record ``ref`` (other names stay); missing is not an error."""
        if not self._containerd:
            # RemoveImage would remove every name of the image: leave it be.
            return
        name = full_name(parse_reference(ref))
        try:
            self._conn.images.Delete(
                images_pb2.DeleteImageRequest(name=name),
                timeout=self._timeout,
                metadata=self._conn.metadata,
            )
        except grpc.RpcError as exc:
            if not is_code(exc, grpc.StatusCode.NOT_FOUND):
                raise rpc_error(exc, f"untag {ref}", self.endpoint) from exc
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._cri_has_name(name):
            time.sleep(0.05)

    def _cri_has_name(self, name: str) -> bool:
        info = self.inspect(name)
        return info is not None and name in info.repo_tags

    def push(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PushResult:
        """Push ``ref`` from the content store over the registry's HTTP API."""
        self._require_containerd("Push")
        parsed = parse_reference(ref)
        if cancel.cancelled:
            raise cancelled_error(cancel, "push")
        record = self._record(ref)
        sources = self._source_names(record)
        return push_image(
            self._store(),
            self._registry,
            parsed,
            record.target,
            sources,
            auth=auth,
            on_progress=on_progress,
            cancel=cancel,
        )

    def _source_names(self, record: Any) -> list[ImageRef]:
        """Every registry name of the same content: where missing blobs can be fetched from."""
        request = images_pb2.ListImagesRequest(filters=[f"target.digest=={record.target.digest}"])
        answer = self._call(self._conn.images.List, request, "list images", containerd=True)
        names = []
        for image in answer.images:
            if is_image_id(image.name):
                continue
            try:
                names.append(parse_reference(image.name))
            except OperationError:
                continue
        return names

    def registry_digest(self, ref: str, *, auth: RegistryAuth | None) -> str:
        """Ask the registry (HEAD on the manifest) which digest ``ref`` resolves to."""
        return self._registry.manifest_digest(ref, auth)

    def close(self) -> None:
        """Close the channel."""
        self._conn.close()


def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()


def _auth(auth: RegistryAuth | None) -> api_pb2.AuthConfig | None:
    if auth is None:
        return None
    # No server_address: containerd parses it as a URL and silently drops the
    # credentials when its host differs from the one it dials (docker.io is
    # dialled as registry-1.docker.io). The agent sends only the image's registry's.
    return api_pb2.AuthConfig(username=auth.username, password=auth.password)


def _repo_digest(info: ImageInfo, ref: ImageRef) -> str | None:
    """The digest CRI records for ``ref``'s repository (names in full, as CRI writes them)."""
    wanted = f"{ref.registry}/{ref.repository}"
    for entry in info.repo_digests:
        name, _, digest = entry.rpartition("@")
        if name in (wanted, ref.name):
            return digest
    return ref.digest
