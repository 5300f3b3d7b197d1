"""ImageOperation: one atomic pull, push or tag on one node."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from imageops.models.base import CamelModel, cel, validations
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
    image_ref_rules,
)
from imageops.models.meta import ObjectMeta

KIND = "ImageOperation"
PLURAL = "imageoperations"
SINGULAR = "imageoperation"
SHORT_NAMES = ["imgop"]
# Built-in defaults, applied by the agent after the session's (see services.effective).
DEFAULT_BACKOFF_LIMIT = 3
DEFAULT_TIMEOUT_SECONDS = 600


def operation_rules(prefix: str = "spec.") -> list[JsonDict]:
    """Cross-field rules of :class:`OperationCommon`; ``prefix`` names the fields in messages.

    Shared with Workflow steps, so that bad input never reaches an agent either way.
    """
    return [
        cel(
            "self.action != 'Tag' || has(self.target)",
            f"{prefix}target is required when action is Tag",
        ),
        cel(
            "self.action != 'Pull' || !has(self.target)",
            f"{prefix}target is not allowed when action is Pull (use a Tag operation)",
        ),
        cel(
            "!has(self.pullPolicy) || self.action == 'Pull'",
            f"{prefix}pullPolicy applies only when action is Pull",
        ),
        cel("!self.force || self.action != 'Pull'", f"{prefix}force applies only to Tag and Push"),
    ]


SPEC_RULES: list[JsonDict] = [
    *operation_rules(),
    cel(
        "!has(self.target) || self.target != self.image",
        "spec.target must differ from spec.image",
    ),
    cel(
        "!has(oldSelf.nodeName) || (has(self.nodeName) && self.nodeName == oldSelf.nodeName)",
        "spec.nodeName cannot be changed once set",
        optionalOldSelf=False,
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


class OperationCommon(CamelModel):
    """The fields of one image operation except its source image.

    Shared with Workflow steps, whose image may instead come from an earlier step.
    """

    action: Action = Field(description="Pull, Push or Tag.")
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        json_schema_extra=image_ref_rules("target"),
        description="Tag: the new reference (required). Push: tag image as target, then push it.",
    )
    force: bool = Field(
        default=False,
        description="Tag and Push: move an existing target tag that points elsewhere.",
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
        default=None,
        max_length=71,
        pattern=DIGEST,
        description="Fail unless the result has this digest.",
    )
    dry_run: bool = Field(
        default=False, description="Validate and ask the registry; change nothing on the node."
    )


class OperationFields(OperationCommon):
    """The fields of one image operation, shared by ImageOperation and resolved Workflow steps."""

    image: str = Field(
        min_length=1,
        max_length=512,
        pattern=IMAGE_REF,
        json_schema_extra=image_ref_rules("image"),
        description="Image reference (name[:tag][@digest]); the source for Tag and Push.",
    )


class ImageOperationSpec(OperationFields):
    """Desired state of an ImageOperation."""

    model_config = ConfigDict(json_schema_extra=validations(*SPEC_RULES))

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
    backoff_limit: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Retries after a retryable failure; when unset, the session's backoffLimit "
        f"or {DEFAULT_BACKOFF_LIMIT}.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="Time limit of one attempt in seconds; when unset, the session's "
        f"timeoutSeconds or {DEFAULT_TIMEOUT_SECONDS}.",
    )


class ImageOperationStatus(CamelModel):
    """Observed state of an ImageOperation."""

    phase: Phase | None = Field(default=None, description="Phase of the operation.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    node: str | None = Field(default=None, description="Node the operation runs on.")
    job_id: str | None = Field(default=None, description="Identifier of the current run.")
    attempts: int = Field(default=0, ge=0, description="Attempts started so far.")
    start_time: datetime | None = Field(default=None, description="When the first attempt began.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    next_retry_time: datetime | None = Field(
        default=None, description="When the next attempt starts after a retryable failure."
    )
    duration_seconds: float | None = Field(
        default=None, ge=0, description="Time from start to completion."
    )
    pull_policy: PullPolicy | None = Field(default=None, description="The effective pull policy.")
    digest: str | None = Field(default=None, description="Registry (manifest) digest.")
    short_digest: str | None = Field(default=None, description="First 12 hex digits of digest.")
    image_id: str | None = Field(default=None, description="Local image ID of the result.")
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the image.")
    cache_hit: bool | None = Field(
        default=None, description="Pull: the image was already on the node."
    )
    previous_target_image_id: str | None = Field(
        default=None, description="Tag: the image the target pointed at before it was moved."
    )
    dry_run_result: str | None = Field(default=None, description="What a dry run found.")
    progress: Progress | None = Field(default=None, description="Transfer progress.")
    last_error: ErrorInfo | None = Field(default=None, description="The latest failure.")


class ImageOperationHead(CamelModel):
    """An ImageOperation without its spec: what the agent decides on before reading the spec."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = "imageops.dev/v1alpha1"
    kind: str = KIND
    metadata: ObjectMeta
    status: ImageOperationStatus = Field(default_factory=ImageOperationStatus)


class ImageOperation(ImageOperationHead):
    """The ImageOperation resource as the handlers see it."""

    spec: ImageOperationSpec


@dataclass(frozen=True)
class InvalidSpec:
    """A spec the API server accepted but the model rejects: the agent fails the operation."""

    node_name: str | None
    action: str
    error: str


__all__ = [
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "SPEC_RULES",
    "ImageOperation",
    "ImageOperationHead",
    "ImageOperationSpec",
    "ImageOperationStatus",
    "InvalidSpec",
    "OperationCommon",
    "OperationDefaults",
    "OperationFields",
    "operation_rules",
]
