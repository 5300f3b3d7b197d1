"""Types shared by the ImageOperation, Workflow and ImageSession models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field
from pydantic.config import JsonDict

from imageops.models.base import CamelModel, cel, validations

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DIGEST = r"^sha256:[a-f0-9]{64}$"
PLATFORM = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"
# The image-reference grammar of distribution's reference package (as
# services.reference parses it), for the API server to check at admission. The
# API server's regexes are RE2 (linear time), and so is pydantic's, so the
# backtracking concern of services.reference does not apply here. A registry
# is a first component with a '.' or a ':port', an [IPv6] or localhost, as
# dockerd's splitDockerDomain decides; an image ID (sha256:<hex>) matches as
# name:tag. The agent still parses every reference (lengths, digest sizes).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PORT = r"(?::[0-9]+)"
_REGISTRY = (
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+{_PORT}?|{_DOMAIN_COMPONENT}{_PORT}"
    rf"|localhost|\[[a-fA-F0-9:]+\]{_PORT}?)"
)
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REF = (
    rf"^(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)
IMAGE_REF_MESSAGE = (
    "must be an image reference [registry[:port]/]name[:tag][@digest]: the name in lower "
    "case, '/'-separated components of letters and digits joined by '.', '_', '__' or '-'; "
    "a tag of up to 128 of [A-Za-z0-9_.-]; a digest as algorithm:hex "
    "(e.g. registry.example.com:5000/team/app:1.0)"
)


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
    SESSION_NOT_FOUND = "SessionNotFound"
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


MAX_PROGRESS_LAYERS = 64


class LayerProgress(CamelModel):
    """Transfer progress of one layer, as the daemon reports it."""

    id: str = Field(max_length=64, description="Layer id as the daemon shows it (12 hex).")
    bytes_done: int = Field(default=0, ge=0, description="Bytes transferred.")
    bytes_total: int = Field(default=0, ge=0, description="Bytes to transfer, as far as known.")
    done: bool = Field(default=False, description="Transferred, or already present.")


class Progress(CamelModel):
    """Live transfer progress of a pull or push (updated at most about every 2 seconds)."""

    layers_done: int = Field(default=0, ge=0, description="Layers transferred.")
    layers_total: int = Field(default=0, ge=0, description="Layers to transfer.")
    bytes_done: int = Field(default=0, ge=0, description="Bytes transferred.")
    bytes_total: int = Field(default=0, ge=0, description="Bytes to transfer, as far as known.")
    summary: str | None = Field(
        default=None,
        max_length=64,
        description='Progress for people and printer columns, such as "42% 120/285MB".',
    )
    layers: list[LayerProgress] = Field(
        default_factory=list,
        max_length=MAX_PROGRESS_LAYERS,
        description="Per-layer progress (the first layers, in the daemon's order).",
    )


def image_ref_rules(field: str) -> JsonDict:
    """The reference grammar as a CEL rule on a field, for a message that says what is wrong.

    The field's ``pattern`` alone would reject the same values, but the API
    server then only prints the regular expression.
    """
    return validations(cel(f"self.matches(r'{IMAGE_REF}')", f"{field} {IMAGE_REF_MESSAGE}"))
