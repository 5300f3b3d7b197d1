"""Error classification: turn Docker and registry failures into typed reasons.

Every failure an operation can meet ends up as an :class:`OperationError`
with a reason from :class:`ErrorReason`, a message a person can act on and
whether retrying could help.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imageops.models.common import ErrorInfo, ErrorReason

RETRYABLE: frozenset[ErrorReason] = frozenset(
    {
        ErrorReason.NETWORK,
        ErrorReason.REGISTRY_UNAVAILABLE,
        ErrorReason.RATE_LIMITED,
        ErrorReason.TIMEOUT,
        ErrorReason.DAEMON_UNAVAILABLE,
        ErrorReason.UNKNOWN,
    }
)

SUGGESTIONS: dict[ErrorReason, str] = {
    ErrorReason.AUTH_FAILED: "Check the username and password in spec.credentials.secretRef "
    "and that the account may access this repository.",
    ErrorReason.CREDENTIALS_NOT_FOUND: "Create a kubernetes.io/dockerconfigjson Secret in this "
    "namespace with an entry for the registry, and name it in spec.credentials.secretRef.",
    ErrorReason.NOT_FOUND: "Check the repository name and tag or digest; for Tag and Push the "
    "source image must exist on the node (pull it first).",
    ErrorReason.INVALID_REFERENCE: "Use name[:tag][@sha256:digest] with a lower-case repository.",
    ErrorReason.DIGEST_MISMATCH: "The registry serves different content than spec.expectedDigest:"
    " check the digest, or pull by digest (name@sha256:...).",
    ErrorReason.CONFLICT: "The target tag already points at another image: set spec.force: true "
    "to move it, or choose another target.",
    ErrorReason.FORBIDDEN: "The registry is not in the agent's --allowed-registries list.",
    ErrorReason.NETWORK: "Check that the node can reach the registry (DNS, firewall, proxy).",
    ErrorReason.REGISTRY_UNAVAILABLE: "The registry is down or overloaded; it is retried "
    "with backoff. Check the registry's health.",
    ErrorReason.RATE_LIMITED: "The registry throttles requests; retried with backoff. "
    "Authenticate or use a mirror to raise the limit.",
    ErrorReason.TIMEOUT: "The attempt exceeded spec.timeoutSeconds; raise it for large images "
    "or check the registry's throughput.",
    ErrorReason.DAEMON_UNAVAILABLE: "The node's Docker daemon does not answer: check the "
    "socket mount and that dockerd runs.",
    ErrorReason.DISK_FULL: "Free space in the node's Docker data root (docker image prune).",
    ErrorReason.NODE_UNAVAILABLE: "No live agent on the node: check the agent DaemonSet pod.",
    ErrorReason.INVALID_WORKFLOW: "Fix the step graph named in the message.",
    ErrorReason.CANCELLED: "The operation was stopped before it finished.",
    ErrorReason.UNKNOWN: "Unexpected error; see the message and the agent's log.",
}


@dataclass
class OperationError(Exception):
    """A classified failure of an image operation."""

    reason: ErrorReason
    message: str

    def __post_init__(self) -> None:
        super().__init__(f"{self.reason}: {self.message}")

    @property
    def retryable(self) -> bool:
        """Whether another attempt could succeed."""
        return self.reason in RETRYABLE

    def to_info(self) -> ErrorInfo:
        """The status.lastError form of this error."""
        return ErrorInfo(
            reason=self.reason,
            message=self.message[:4096],
            retryable=self.retryable,
            suggestion=SUGGESTIONS.get(self.reason, ""),
        )


# Ordered: the first pattern that matches wins, so specific ones come first.
_PATTERNS: list[tuple[re.Pattern[str], ErrorReason]] = [
    (re.compile(p, re.IGNORECASE), reason)
    for p, reason in [
        (r"no space left on device", ErrorReason.DISK_FULL),
        (r"toomanyrequests|too many requests|rate limit|\b429\b", ErrorReason.RATE_LIMITED),
        (r"invalid reference format|invalid tag format|invalid repository name|"
         r"repository name must|cannot be used with digest|must be lowercase",
         ErrorReason.INVALID_REFERENCE),
        (r"unauthorized|authentication required|no basic auth credentials|"
         r"incorrect username or password|\b401\b", ErrorReason.AUTH_FAILED),
        (r"denied|insufficient_scope|\b403\b", ErrorReason.AUTH_FAILED),
        (r"manifest unknown|manifest for .* not found|not found|no such image|"
         r"repository does not exist|name unknown|does not exist", ErrorReason.NOT_FOUND),
        (r"digest mismatch|digest did not match|does not match", ErrorReason.DIGEST_MISMATCH),
        (r"cannot connect to the docker daemon|docker\.sock|error while fetching server api|"
         r"is the docker daemon running", ErrorReason.DAEMON_UNAVAILABLE),
        (r"timeout|timed out|deadline exceeded", ErrorReason.TIMEOUT),
        (r"connection refused|connection reset|\b50[0234]\b|service unavailable|bad gateway|"
         r"unexpected eof|broken pipe", ErrorReason.REGISTRY_UNAVAILABLE),
        (r"no such host|name resolution|network is unreachable|no route to host|dial tcp|"
         r"tls:|x509|certificate|http response to https client", ErrorReason.NETWORK),
    ]
]


def classify_message(message: str) -> ErrorReason:
    """The reason a Docker or registry error message stands for (Unknown when none fits)."""
    for pattern, reason in _PATTERNS:
        if pattern.search(message):
            return reason
    return ErrorReason.UNKNOWN


def from_message(message: str, default: ErrorReason | None = None) -> OperationError:
    """An OperationError for a raw message, classified by its text."""
    reason = classify_message(message)
    if reason is ErrorReason.UNKNOWN and default is not None:
        reason = default
    return OperationError(reason, message.strip() or str(reason))
