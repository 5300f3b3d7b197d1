"""Types shared by the ImageOperation, Workflow and ImageSession models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from imageops.models.base import CamelModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DIGEST = r"^sha256:[a-f0-9]{64}$"
PLATFORM = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"
# A loose image-reference check: the API server rejects what is obviously wrong
# (spaces, upper case in the path, empty parts); the agent parses the rest.
IMAGE_REF = r"^[a-zA-Z0-9][a-zA-Z0-9._:/@-]*$"


class Action(StrEnum):
    """What an ImageOperation does on its node."""

    PULL = "Pull"
    PUSH = "Push"
    TAG = "Tag"


class PullPolicy(StrEnum):
    """When a Pull contacts the registry, as for Pod containers."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"


class Phase(StrEnum):
    """Lifecycle phase of an ImageOperation (and of Workflow steps)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    """Kubernetes condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ErrorReason(StrEnum):
    """Typed failure reasons; ``services.errors`` says which are retryable."""

    AUTH_FAILED = "AuthFailed"
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    NOT_FOUND = "NotFound"
    INVALID_REFERENCE = "InvalidReference"
    DIGEST_MISMATCH = "DigestMismatch"
    CONFLICT = "Conflict"
    FORBIDDEN = "Forbidden"
    NETWORK = "Network"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    RATE_LIMITED = "RateLimited"
    TIMEOUT = "Timeout"
    DAEMON_UNAVAILABLE = "DaemonUnavailable"
    DISK_FULL = "DiskFull"
    NODE_UNAVAILABLE = "NodeUnavailable"
    INVALID_WORKFLOW = "InvalidWorkflow"
    CANCELLED = "Cancelled"
    # The node's runtime cannot do this action at all (Tag/Push on a CRI-only runtime).
    UNSUPPORTED = "Unsupported"
    UNKNOWN = "Unknown"


class LocalObjectReference(CamelModel):
    """A reference to an object by name in the same namespace."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object."
    )


class Credentials(CamelModel):
    """Registry credentials: a kubernetes.io/dockerconfigjson Secret in the same namespace."""

    secret_ref: LocalObjectReference = Field(
        description="Secret of type kubernetes.io/dockerconfigjson in the object's namespace."
    )


class Condition(CamelModel):
    """A status condition in the Kubernetes API convention (metav1.Condition)."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, such as Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="", max_length=1024, description="Machine-readable reason (CamelCase)."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was set for."
    )


class ErrorInfo(CamelModel):
    """The last error of an operation, with what a person can do about it."""

    reason: ErrorReason = Field(description="Typed failure reason.")
    message: str = Field(max_length=4096, description="What went wrong.")
    retryable: bool = Field(description="Whether retrying could help.")
    suggestion: str = Field(default="", max_length=1024, description="What a person can do.")


class Progress(CamelModel):
    """Live transfer progress of a pull or push (updated at most about every 2 seconds)."""

    layers_done: int = Field(default=0, ge=0, description="Layers transferred.")
    layers_total: int = Field(default=0, ge=0, description="Layers to transfer.")
    bytes_done: int = Field(default=0, ge=0, description="Bytes transferred.")
    bytes_total: int = Field(default=0, ge=0, description="Bytes to transfer, as far as known.")
