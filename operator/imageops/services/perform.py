"""Carry out one attempt of an ImageOperation against an ImageBackend.

Blocking (the agent runs it in its thread pool). Every success is verified
before it is claimed; every failure is an OperationError.
"""

from __future__ import annotations

from dataclasses import dataclass

from imageops.models.common import Action, ErrorReason, PullPolicy
from imageops.models.imageoperation import OperationFields
from imageops.services.backend import (
    CancelToken,
    ImageBackend,
    ImageInfo,
    ProgressCallback,
    RegistryAuth,
)
from imageops.services.errors import OperationError
from imageops.services.lifecycle import OperationResult
from imageops.services.pull_grants import PullRecords, authorize_cache_hit
from imageops.services.reference import ImageRef, default_pull_policy, parse_reference


@dataclass
class Attempt:
    """Everything one attempt needs besides the spec."""

    backend: ImageBackend
    auth: RegistryAuth | None
    cancel: CancelToken
    on_progress: ProgressCallback
    # Who pulled what on this node; None: every cache hit asks the registry.
    records: PullRecords | None = None


def effective_pull_policy(spec: OperationFields) -> PullPolicy:
    """spec.pullPolicy, or the Kubernetes default for the image reference."""
    if spec.pull_policy:
        return PullPolicy(spec.pull_policy)
    return default_pull_policy(parse_reference(spec.image))


def credential_registry(spec: OperationFields) -> str | None:
    """The registry whose credentials the operation needs (None for a Tag)."""
    if spec.action == Action.TAG:
        return None
    ref = spec.target if spec.action == Action.PUSH and spec.target else spec.image
    return parse_reference(ref).registry


def referenced_registries(spec: OperationFields) -> list[str]:
    """Every registry the operation names (checked against --allowed-registries)."""
    refs = [spec.image] + ([spec.target] if spec.target else [])
    return [parse_reference(r).registry for r in refs]


def perform(spec: OperationFields, attempt: Attempt) -> OperationResult:
    """Run one attempt of the operation described by ``spec``."""
    if spec.action == Action.PULL:
        return _pull(spec, attempt)
    if spec.action == Action.TAG:
        assert spec.target is not None  # guaranteed by the CRD's CEL rule
        return _tag(spec, attempt, spec.image, spec.target)
    return _push(spec, attempt)


def repo_digest(info: ImageInfo, ref: ImageRef) -> str | None:
    """The registry digest of ``info`` in ``ref``'s repository, if the daemon knows it."""
    # containerd (CRI) writes names in full: docker.io/library/busybox.
    names = (ref.name, f"{ref.registry}/{ref.repository}")
    for entry in info.repo_digests:
        name, _, digest = entry.rpartition("@")
        if name in names:
            return digest
    return None


def local_digest(info: ImageInfo, ref: ImageRef) -> str:
    """The digest of a local image: its registry digest in ``ref``'s repository.

    An image no registry has served in that repository (built or imported on the
    node, or known only under another repository) has no manifest digest there;
    its digest is then its image ID, the content digest of its configuration,
    which identifies exactly that image (README: What "Succeeded" means).
    """
    return repo_digest(info, ref) or ref.digest or info.image_id


def _check_expected(spec: OperationFields, digest: str | None, what: str) -> None:
    if spec.expected_digest and digest != spec.expected_digest:
        raise OperationError(
            ErrorReason.DIGEST_MISMATCH,
            f"{what} has digest {digest or 'unknown'}, expected {spec.expected_digest}",
        )


def _pull(spec: OperationFields, attempt: Attempt) -> OperationResult:
    ref = parse_reference(spec.image)
    backend = attempt.backend
    if spec.dry_run:
        served = backend.registry_digest(str(ref), auth=attempt.auth)
        _check_expected(spec, served, f"{ref} in the registry")
        return OperationResult(digest=served, dry_run_result=f"would pull {ref} at {served}")
    if effective_pull_policy(spec) == PullPolicy.IF_NOT_PRESENT:
        info = backend.inspect(str(ref))
        cached = _cached(spec, info, ref)
        if cached is not None and info is not None:
            authorize_cache_hit(backend, attempt.records, ref, info, cached.digest, attempt.auth)
            return cached
    if spec.expected_digest:
        # Ask first: a mismatch then costs one request, not a whole download.
        _check_expected(spec, backend.registry_digest(str(ref), auth=attempt.auth), str(ref))
    pulled = backend.pull(
        str(ref),
        auth=attempt.auth,
        platform=spec.platform,
        on_progress=attempt.on_progress,
        cancel=attempt.cancel,
    )
    digest = pulled.digest or repo_digest(pulled.image, ref) or ref.digest
    if spec.expected_digest and digest != spec.expected_digest:
        # The tag moved between the check and the pull: leave nothing under that name.
        backend.remove(str(ref))
        _check_expected(spec, digest, f"pulled {ref}")
    if not digest:
        raise OperationError(ErrorReason.UNKNOWN, f"pulled {ref} but the daemon reports no digest")
    if attempt.records is not None:
        # The registry let these credentials (or anyone) pull it: later cache hits may use it.
        attempt.records.add(ref.name, pulled.image.image_id, attempt.records.key(attempt.auth))
    return OperationResult(
        digest=digest,
        image_id=pulled.image.image_id,
        size_bytes=pulled.image.size_bytes,
        cache_hit=pulled.cache_hit,
        bytes_transferred=0 if pulled.cache_hit else pulled.image.size_bytes,
    )


def _cached(spec: OperationFields, info: ImageInfo | None, ref: ImageRef) -> OperationResult | None:
    """The local image as a cache hit, when it satisfies the spec."""
    if info is None:
        return None
    digest = local_digest(info, ref)
    if spec.expected_digest and digest != spec.expected_digest:
        return None
    return OperationResult(
        digest=digest, image_id=info.image_id, size_bytes=info.size_bytes, cache_hit=True
    )


def _tag(spec: OperationFields, attempt: Attempt, image: str, target: str) -> OperationResult:
    backend = attempt.backend
    source_ref, target_ref = parse_reference(image), parse_reference(target)
    if target_ref.digest:
        raise OperationError(
            ErrorReason.INVALID_REFERENCE, f"target {target} names a digest; a tag is needed"
        )
    source = backend.inspect(str(source_ref))
    if source is None:
        raise OperationError(
            ErrorReason.NOT_FOUND, f"source image {source_ref} is not present on the node"
        )
    previous = backend.inspect(str(target_ref))
    previous_id = previous.image_id if previous else None
    if previous_id and previous_id != source.image_id and not spec.force:
        raise OperationError(
            ErrorReason.CONFLICT,
            f"{target_ref} already points at {previous_id}, not at {source.image_id}",
        )
    digest = local_digest(source, source_ref)
    if spec.dry_run:
        return OperationResult(
            digest=digest,
            image_id=source.image_id,
            previous_target_image_id=previous_id,
            dry_run_result=f"would tag {source.image_id} as {target_ref}",
        )
    if previous_id != source.image_id:
        backend.tag(str(source_ref), str(target_ref))
    moved = backend.inspect(str(target_ref))
    if moved is None or moved.image_id != source.image_id:
        raise OperationError(
            ErrorReason.UNKNOWN, f"{target_ref} does not point at the source after tagging"
        )
    _check_expected(spec, digest, str(source_ref))
    return OperationResult(
        digest=digest,
        image_id=source.image_id,
        size_bytes=source.size_bytes,
        previous_target_image_id=previous_id,
    )


def _push(spec: OperationFields, attempt: Attempt) -> OperationResult:
    backend = attempt.backend
    pushed_ref = parse_reference(spec.target or spec.image)
    if pushed_ref.digest and not pushed_ref.tag:
        raise OperationError(
            ErrorReason.INVALID_REFERENCE, f"cannot push {pushed_ref}: a tag is needed"
        )
    previous_id = None
    if spec.target:
        tagged = _tag(
            spec.model_copy(update={"expected_digest": None}), attempt, spec.image, spec.target
        )
        previous_id = tagged.previous_target_image_id
    # A dry run has not tagged the target, so the image to push is still the source.
    local_name = spec.image if spec.dry_run and spec.target else str(pushed_ref)
    local = backend.inspect(local_name)
    if local is None:
        raise OperationError(
            ErrorReason.NOT_FOUND, f"image {local_name} is not present on the node"
        )
    if spec.dry_run:
        return _push_dry_run(attempt, pushed_ref, local, previous_id)
    pushed = backend.push(
        str(pushed_ref), auth=attempt.auth, on_progress=attempt.on_progress, cancel=attempt.cancel
    )
    # Verify with the registry itself: a push is done only when the registry serves it.
    served = backend.registry_digest(str(pushed_ref), auth=attempt.auth)
    if served != pushed.digest:
        raise OperationError(
            ErrorReason.DIGEST_MISMATCH,
            f"pushed {pushed_ref} as {pushed.digest} but the registry serves {served}",
        )
    _check_expected(spec, pushed.digest, f"pushed {pushed_ref}")
    return OperationResult(
        digest=pushed.digest,
        image_id=local.image_id,
        size_bytes=local.size_bytes,
        previous_target_image_id=previous_id,
        bytes_transferred=pushed.size_bytes,
    )


def _push_dry_run(
    attempt: Attempt, ref: ImageRef, local: ImageInfo, previous_id: str | None
) -> OperationResult:
    """Check that the registry answers (with these credentials) without pushing anything."""
    try:
        current = attempt.backend.registry_digest(str(ref), auth=attempt.auth)
    except OperationError as err:
        if err.reason != ErrorReason.NOT_FOUND:
            raise
        current = None
    where = f"replacing {current}" if current else "new tag"
    return OperationResult(
        digest=current,
        image_id=local.image_id,
        previous_target_image_id=previous_id,
        dry_run_result=f"would push {local.image_id} to {ref} ({where})",
    )
