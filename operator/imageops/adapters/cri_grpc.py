"""gRPC plumbing for CRI runtimes and containerd: the channel, the stubs, error mapping.

One channel per endpoint (a unix socket) carries both APIs: the CRI
ImageService/RuntimeService (``runtime.v1``, any CRI runtime) and, on
containerd, its own Images, Content and Version services, which need the
``containerd-namespace`` header; the kubelet's images live in ``k8s.io``.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from imageops.adapters.grpcgen.containerd.services.content.v1 import content_pb2_grpc
from imageops.adapters.grpcgen.containerd.services.images.v1 import images_pb2_grpc
from imageops.adapters.grpcgen.containerd.services.version.v1 import version_pb2_grpc
from imageops.adapters.grpcgen.cri.v1 import api_pb2_grpc
from imageops.models.common import ErrorReason
from imageops.services.errors import OperationError, classify_message

K8S_NAMESPACE = "k8s.io"
# CRI ListImages and image status answers can be larger than gRPC's 4 MiB default.
_MAX_MESSAGE = 64 * 1024 * 1024
_CODE_REASONS: dict[grpc.StatusCode, ErrorReason] = {
    grpc.StatusCode.NOT_FOUND: ErrorReason.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorReason.INVALID_REFERENCE,
    grpc.StatusCode.ALREADY_EXISTS: ErrorReason.CONFLICT,
    grpc.StatusCode.UNAUTHENTICATED: ErrorReason.AUTH_FAILED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorReason.AUTH_FAILED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorReason.DISK_FULL,
    grpc.StatusCode.UNIMPLEMENTED: ErrorReason.UNSUPPORTED,
    grpc.StatusCode.CANCELLED: ErrorReason.CANCELLED,
}


_AUTH_CAUSE = re.compile(
    r"authorization failed|no basic auth credentials|401 unauthorized", re.IGNORECASE
)


def endpoint_target(endpoint: str) -> str:
    """The gRPC target of ``unix:///path`` or a bare socket path."""
    path = endpoint.removeprefix("unix://")
    if not path.startswith("/"):
        raise ValueError(f"runtime endpoint {endpoint!r}: expected unix:///absolute/path")
    return f"unix://{path}"


class Connection:
    """The channel to one runtime endpoint and the stubs imageops uses on it."""

    def __init__(self, endpoint: str, namespace: str = K8S_NAMESPACE) -> None:
        self.endpoint = endpoint_target(endpoint)
        self.channel = grpc.insecure_channel(
            self.endpoint,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        self.metadata = (("containerd-namespace", namespace),)
        self.cri_images: Any = api_pb2_grpc.ImageServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.cri_runtime: Any = api_pb2_grpc.RuntimeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.images: Any = images_pb2_grpc.ImagesStub(self.channel)  # type: ignore[no-untyped-call]
        self.content: Any = content_pb2_grpc.ContentStub(self.channel)  # type: ignore[no-untyped-call]
        self.version: Any = version_pb2_grpc.VersionStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def rpc_error(exc: grpc.RpcError, what: str, endpoint: str) -> OperationError:
    """An OperationError for a failed call: by the message's text first, then by the code.

    containerd reports registry failures (401, 404, connection refused) as
    code Unknown with the registry's words in the message, so the text is
    what tells them apart; Unavailable means the socket itself.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or str(code)
    message = f"{what}: {details}"
    if code is grpc.StatusCode.UNAVAILABLE:
        return OperationError(
            ErrorReason.DAEMON_UNAVAILABLE,
            f"cannot reach the container runtime at {endpoint}: {details}",
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        # Our own bound on a short call: a stuck runtime, not spec.timeoutSeconds.
        return OperationError(
            ErrorReason.DAEMON_UNAVAILABLE, f"no answer from the runtime at {endpoint}: {message}"
        )
    # containerd 2.x words a missing or refused login like dockerd's NotFound
    # ("pull access denied, ... may require authorization") but then names the
    # cause: the registry asked for credentials it did not get or accept.
    if _AUTH_CAUSE.search(details):
        return OperationError(ErrorReason.AUTH_FAILED, message)
    reason = classify_message(details)
    if reason is ErrorReason.UNKNOWN or code in (
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.ALREADY_EXISTS,
    ):
        reason = _CODE_REASONS.get(code, reason)
    return OperationError(reason, message)


def is_code(exc: BaseException, code: grpc.StatusCode) -> bool:
    """Whether ``exc`` is a gRPC error with ``code``."""
    return isinstance(exc, grpc.RpcError) and hasattr(exc, "code") and exc.code() is code
