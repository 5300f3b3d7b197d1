"""ImageSession: shared defaults for a group of operations, and statistics about them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from imageops.models.base import API_VERSION, CamelModel
from imageops.models.common import (
    DNS_SUBDOMAIN,
    Action,
    Condition,
    Credentials,
    ErrorReason,
    Phase,
)
from imageops.models.imageoperation import OperationDefaults
from imageops.models.meta import ObjectMeta, lenient

KIND = "ImageSession"
PLURAL = "imagesessions"
SINGULAR = "imagesession"
SHORT_NAMES = ["imgsess"]

HISTORY_LIMIT = 50
MAX_HISTORY = 500
MAX_CONDITIONS = 16
# Folded operations whose recorded-generation annotation is not written yet: the
# controller folds no more than this many before the annotations catch up.
MAX_RECORDED = 256
# "<uid>/<generation>": a 36-character uid, a slash and up to 19 digits.
RECORDED_KEY_LENGTH = 64
# host[:port], optionally starting with "*." to allow every subdomain.
REGISTRY_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$"

ObjectName = Annotated[str, Field(max_length=253)]


class SessionPhase(StrEnum):
    """Lifecycle phase of an ImageSession."""

    ACTIVE = "Active"
    IDLE = "Idle"
    EXPIRED = "Expired"


class ImageSessionSpec(OperationDefaults):
    """Desired state of an ImageSession: defaults for its operations, and limits."""

    node_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Default node for operations of this session that name none.",
    )
    credentials: Credentials | None = Field(
        default=None, description="Default registry credentials for the session's operations."
    )
    allowed_registries: (
        list[Annotated[str, Field(min_length=1, max_length=261, pattern=REGISTRY_PATTERN)]] | None
    ) = Field(
        default=None,
        max_length=50,
        description='Registries (host[:port], "*.domain" for subdomains) operations may use; '
        "empty allows all.",
    )
    ttl_seconds_after_idle: int | None = Field(
        default=None,
        ge=0,
        le=31536000,
        description="Expire the session after this many seconds without activity.",
    )
    preserve_logs: bool = Field(
        default=False,
        description="On expiry, archive the session's history and errors to a ConfigMap.",
    )
    history_limit: int = Field(
        default=HISTORY_LIMIT,
        ge=1,
        le=MAX_HISTORY,
        description="How many recent executions and errors the status keeps.",
    )


class JobCounts(CamelModel):
    """Operations of the session by state."""

    active: int = Field(default=0, ge=0, description="Operations pending or running.")
    succeeded: int = Field(default=0, ge=0, description="Operations that succeeded.")
    failed: int = Field(default=0, ge=0, description="Operations that failed.")
    total: int = Field(default=0, ge=0, description="All operations seen.")


class ActionStats(CamelModel):
    """Counts and durations of the session's operations of one action."""

    count: int = Field(default=0, ge=0, description="Finished operations.")
    succeeded: int = Field(default=0, ge=0, description="Operations that succeeded.")
    failed: int = Field(default=0, ge=0, description="Operations that failed.")
    min_seconds: float | None = Field(default=None, ge=0, description="Shortest duration.")
    avg_seconds: float | None = Field(default=None, ge=0, description="Mean duration.")
    max_seconds: float | None = Field(default=None, ge=0, description="Longest duration.")
    total_seconds: float | None = Field(default=None, ge=0, description="Sum of the durations.")
    timed: int | None = Field(
        default=None, ge=0, description="Finished operations that reported a duration."
    )


class ErrorRecord(CamelModel):
    """One failure of an operation of the session."""

    time: datetime = Field(description="When the operation failed.")
    operation: ObjectName = Field(description="Name of the ImageOperation.")
    reason: ErrorReason = Field(description="Typed failure reason.")
    message: str = Field(default="", max_length=1024, description="The error message.")


class ErrorSummary(CamelModel):
    """Failures of the session's operations."""

    by_reason: dict[ErrorReason, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        max_length=len(ErrorReason),
        description="Failure reason to how many operations failed so.",
    )
    recent: list[ErrorRecord] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="The latest failures, newest last (at most spec.historyLimit).",
    )


class Execution(CamelModel):
    """One finished operation of the session."""

    operation: ObjectName = Field(description="Name of the ImageOperation.")
    workflow: ObjectName | None = Field(
        default=None, description="Workflow the operation was a step of."
    )
    action: Action = Field(description="Pull, Push or Tag.")
    image: str = Field(max_length=512, description="The operation's image.")
    result: Phase = Field(description="Succeeded or Failed.")
    duration_seconds: float | None = Field(default=None, ge=0, description="How long it ran.")
    reason: ErrorReason | None = Field(default=None, description="Failure reason, if it failed.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")


class ImageSessionStatus(CamelModel):
    """Observed state of an ImageSession."""

    phase: SessionPhase | None = Field(default=None, description="Phase of the session.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS, description="Standard conditions."
    )
    jobs: JobCounts | None = Field(default=None, description="Operations by state.")
    actions: dict[Action, ActionStats] = Field(
        default_factory=dict,
        max_length=len(Action),
        description="Pull, Push and Tag to their counts and durations.",
    )
    errors: ErrorSummary | None = Field(default=None, description="Failures by reason.")
    recent_executions: list[Execution] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description="The latest finished operations, newest last (at most spec.historyLimit).",
    )
    cache_hits: int | None = Field(
        default=None, ge=0, description="Successful pulls that found the image on the node."
    )
    cache_hit_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Share of pulls that found the image on the node."
    )
    last_activity_time: datetime | None = Field(
        default=None, description="When an operation of the session last started or finished."
    )
    expires_at: datetime | None = Field(
        default=None, description="When the session expires unless there is new activity."
    )
    archived_to: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="ConfigMap holding the archived history (preserveLogs).",
    )
    recorded: list[Annotated[str, Field(max_length=RECORDED_KEY_LENGTH)]] | None = Field(
        default=None,
        max_length=MAX_RECORDED,
        description="Operations (uid/generation) already counted here whose "
        "imageops.dev/recorded-generation annotation may not be written yet; "
        "a restarted controller does not count them again.",
    )


class ImageSession(CamelModel):
    """The ImageSession resource as the workers take it: validated once, at the kopf edge."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ImageSessionSpec = Field(default_factory=ImageSessionSpec)
    status: ImageSessionStatus = Field(default_factory=ImageSessionStatus)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ImageSession:
        """A watch event's body; spec and status leniently (fields unknown to this
        version are dropped, an invalid part falls back to its defaults)."""
        return cls(
            api_version=str(body.get("apiVersion") or API_VERSION),
            kind=str(body.get("kind") or KIND),
            metadata=ObjectMeta.model_validate(body["metadata"]),
            spec=lenient(ImageSessionSpec, body.get("spec")),
            status=lenient(ImageSessionStatus, body.get("status")),
        )


__all__ = [
    "HISTORY_LIMIT",
    "KIND",
    "MAX_HISTORY",
    "MAX_RECORDED",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "ActionStats",
    "ErrorRecord",
    "ErrorSummary",
    "Execution",
    "ImageSession",
    "ImageSessionSpec",
    "ImageSessionStatus",
    "JobCounts",
    "SessionPhase",
]
