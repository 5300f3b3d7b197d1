"""Who may use an image already on the node: the right to pull behind a cache hit.

An ``IfNotPresent`` pull of a present image must not hand one tenant's private
image to another (Kubernetes closes the same hole in the kubelet with KEP-2535,
"ensure secret pulled images"). A cache hit is granted only when the operation
could have pulled the image itself:

* the image was pulled here anonymously (anyone may pull it), or
* it was pulled here with the same credentials (compared as a keyed hash,
  never the secret itself), or
* one manifest request to the registry with the operation's own credentials
  (by digest when the digest is known) succeeds; that grant is then remembered.

Otherwise the pull fails with ``AuthFailed`` (credentials the registry refuses)
or ``CredentialsNotFound`` (no credentials, and the registry wants some).
"""

from __future__ import annotations

from typing import Protocol

from imageops.models.common import ErrorReason
from imageops.services.backend import ImageBackend, ImageInfo, RegistryAuth
from imageops.services.errors import OperationError
from imageops.services.reference import ImageRef

ANONYMOUS = "anonymous"
# What a registry answers when these credentials (or none) may not pull the image.
_REFUSALS = frozenset({ErrorReason.AUTH_FAILED, ErrorReason.NOT_FOUND})


class PullRecords(Protocol):
    """Remembers which credentials pulled which image (see adapters.pull_records)."""

    def key(self, auth: RegistryAuth | None) -> str:
        """ANONYMOUS, or a keyed hash of the credentials (never the secret)."""

    def holders(self, name: str, image_id: str) -> frozenset[str]:
        """Keys that pulled image ``image_id`` from repository ``name`` on this node."""

    def add(self, name: str, image_id: str, key: str) -> None:
        """Record that ``key`` may pull ``image_id`` from ``name``."""


def granted(holders: frozenset[str], key: str) -> bool:
    """Whether the recorded pulls grant a cache hit to credentials ``key``."""
    return ANONYMOUS in holders or key in holders


def authorize_cache_hit(
    backend: ImageBackend,
    records: PullRecords | None,
    ref: ImageRef,
    info: ImageInfo,
    digest: str | None,
    auth: RegistryAuth | None,
) -> None:
    """Raise unless the operation may use the present image ``info`` for ``ref``."""
    key = records.key(auth) if records is not None else ANONYMOUS
    if records is not None and granted(records.holders(ref.name, info.image_id), key):
        return
    asked = f"{ref.name}@{digest}" if digest else str(ref)
    try:
        backend.registry_digest(asked, auth=auth)
    except OperationError as err:
        if err.reason not in _REFUSALS:
            raise  # the registry could not be asked (retryable): fail closed, try again
        why = f"{ref} is on the node, but a cache hit needs the right to pull it and"
        if auth is None:
            raise OperationError(
                ErrorReason.CREDENTIALS_NOT_FOUND,
                f"{why} the registry refuses an anonymous request ({err.message}); "
                "name a Secret with credentials for it in spec.credentials",
            ) from None
        raise OperationError(
            ErrorReason.AUTH_FAILED,
            f"{why} the registry refuses this operation's credentials ({err.message})",
        ) from None
    if records is not None:
        records.add(ref.name, info.image_id, key)
