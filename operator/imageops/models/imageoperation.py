"""ImageOperation: one atomic pull, push or tag on one node."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from imageops.models.base import CamelModel, cel
from imageops.models.common import (
    DIGEST,
    DNS_SUBDOMAIN,
    IMAGE_REF,
    PLATFORM,
    Action,
    Condition,
    Credentials,
    ErrorInfo,
    LocalObjectReference,
    Phase,
    Progress,
    PullPolicy,
)

KIND = "ImageOperation"
PLURAL = "imageoperations"
SINGULAR = "imageoperation"
SHORT_NAMES = ["imgop"]

# Cross-field rules the API server enforces, so that bad input never reaches an agent.
SPEC_RULES = [
    cel("self.action != 'Tag' || has(self.target)", "spec.target is required when action is Tag"),
    cel(
        "self.action != 'Pull' || !has(self.target)",
        "spec.target is not allowed when action is Pull (use a Tag operation)",
    ),
    cel(
        "!has(self.pullPolicy) || self.action == 'Pull'",
        "spec.pullPolicy applies only when action is Pull",
    ),
    cel("!self.force || self.action != 'Pull'", "spec.force applies only to Tag and Push"),
    cel(
        "!has(self.target) || self.target != self.image",
        "spec.target must differ from spec.image",
    ),
    cel(
        "!has(oldSelf.nodeName) || (has(self.nodeName) && self.nodeName == oldSelf.nodeName)",
        "spec.nodeName cannot be changed once set",
        optionalOldSelf="false",
    ),
]


class OperationDefaults(CamelModel):
    """Retry and timeout settings shared by operations, workflow steps and sessions."""

    backoff_limit: int | None = Field(
        default=None, ge=0, le=20, description="Retries after a retryable failure."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="Time limit of one attempt, in seconds."
    )


class OperationFields(CamelModel):
    """The fields of one image operation, shared by ImageOperation and Workflow steps."""

    action: Action = Field(description="Pull, Push or Tag.")
    image: str = Field(
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        description="Image reference (name[:tag][@digest]); the source for Tag and Push.",
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        description="Tag: the new reference (required). Push: tag image as target, then push it.",
    )
    force: bool = Field(
        default=False, description="Tag and Push: move an existing target tag that points elsewhere."
    )
    credentials: Credentials | None = None
    platform: str | None = Field(
        default=None, pattern=PLATFORM, max_length=64, description="os/arch[/variant] to pull."
    )
    pull_policy: PullPolicy | None = Field(
        default=None,
        description="Always or IfNotPresent; defaults as Kubernetes does: Always for :latest "
        "or no tag, otherwise IfNotPresent.",
    )
    expected_digest: str | None = Field(
        default=None, pattern=DIGEST, description="Fail unless the result has this digest."
    )
    dry_run: bool = Field(
        default=False, description="Validate and ask the registry; change nothing on the node."
    )


class ImageOperationSpec(OperationFields):
    """Desired state of an ImageOperation."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": SPEC_RULES})

    node_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Node whose agent runs the operation; assigned by the controller when empty.",
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="When nodeName is empty: choose a node with these labels."
    )
    session_ref: LocalObjectReference | None = Field(
        default=None, description="ImageSession this operation belongs to."
    )
    backoff_limit: int = Field(
        default=3, ge=0, le=20, description="Retries after a retryable failure."
    )
    timeout_seconds: int = Field(
        default=600, ge=1, le=86400, description="Time limit of one attempt, in seconds."
    )


class ImageOperationStatus(CamelModel):
    """Observed state of an ImageOperation."""

    phase: Phase | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    node: str | None = None
    job_id: str | None = Field(default=None, description="Identifier of the current run.")
    attempts: int = Field(default=0, ge=0)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    next_retry_time: datetime | None = None
    duration_seconds: float | None = Field(default=None, ge=0)
    pull_policy: PullPolicy | None = Field(default=None, description="The effective pull policy.")
    digest: str | None = Field(default=None, description="Registry (manifest) digest.")
    short_digest: str | None = Field(default=None, description="First 12 hex digits of digest.")
    image_id: str | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    cache_hit: bool | None = None
    previous_target_image_id: str | None = Field(
        default=None, description="Tag: the image the target pointed at before it was moved."
    )
    dry_run_result: str | None = Field(default=None, description="What a dry run found.")
    progress: Progress | None = None
    last_error: ErrorInfo | None = None


class ImageOperation(CamelModel):
    """The ImageOperation resource as the handlers see it (metadata kept loose)."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = "imageops.dev/v1alpha1"
    kind: str = KIND
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: ImageOperationSpec
    status: ImageOperationStatus = Field(default_factory=ImageOperationStatus)


__all__ = [
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "ImageOperation",
    "ImageOperationSpec",
    "ImageOperationStatus",
    "OperationDefaults",
    "OperationFields",
]
