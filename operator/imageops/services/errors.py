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
        # Unknown is retryable: what nobody classified is mostly a transient fault
        # (a stream cut mid-transfer, a daemon hiccup), and backoffLimit bounds the
        # cost when it is not - the operation then fails with the message anyway.
        ErrorReason.UNKNOWN,
    }
)

SUGGESTIONS: dict[ErrorReason, str] = {
    ErrorReason.AUTH_FAILED: "Check the username and password in spec.credentials.secretRef "
    "and that the account may access this repository.",
    ErrorReason.CREDENTIALS_NOT_FOUND: "Create a kubernetes.io/dockerconfigjson Secret in this "
    "namespace with an entry for the registry, and name it in spec.credentials.secretRef.",
    ErrorReason.NOT_FOUND: "Check the repository name and tag or digest; for Tag and Push the "
    "source image must exist on the node (pull it first). A private repository answers the "
    "same way without valid credentials: check spec.credentials.",
    ErrorReason.INVALID_REFERENCE: "Use name[:tag][@sha256:digest] with a lower-case repository.",
    ErrorReason.DIGEST_MISMATCH: "The registry serves different content than spec.expectedDigest:"
    " check the digest, or pull by digest (name@sha256:...).",
    ErrorReason.CONFLICT: "The target tag already points at another image: set spec.force: true "
    "to move it, or choose another target.",
    ErrorReason.FORBIDDEN: "The registry is not in the agent's --allowed-registries list.",
    ErrorReason.NETWORK: "Check that the node can reach the registry (DNS, firewall, proxy); "
    "for TLS (x509, HTTP response to HTTPS client) errors, make the node's Docker trust the "
    "registry's CA or list the registry under insecure-registries.",
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
    ErrorReason.SESSION_NOT_FOUND: "Create the ImageSession named in spec.sessionRef in this "
    "namespace (or fix the name); the operation waits for it up to the agent's "
    "--session-wait-seconds, then fails.",
    ErrorReason.INVALID_WORKFLOW: "Fix the step graph named in the message.",
    ErrorReason.CANCELLED: "The operation was stopped before it finished.",
    ErrorReason.UNSUPPORTED: "The node's container runtime cannot do this action: Tag and Push "
    "need Docker or containerd (CRI-O and other CRI-only runtimes offer no API to tag or read "
    "image content). Run the operation on a Docker or containerd node.",
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
# Bare HTTP status codes must not be read out of a port, tag or path
# ("127.0.0.1:5000/x:429"), hence the look-behind in front of each.
_CODE = r"(?<![:/.@-])\b"
_PATTERNS: list[tuple[re.Pattern[str], ErrorReason]] = [
    (re.compile(p, re.IGNORECASE), reason)
    for p, reason in [
        (r"no space left on device", ErrorReason.DISK_FULL),
        # Before the auth patterns: "permission denied ... Docker daemon socket" is the
        # node's socket, not the registry refusing the account.
        (
            r"cannot connect to the docker daemon|docker daemon socket|docker\.sock|"
            r"error while fetching server api|is the docker daemon running",
            ErrorReason.DAEMON_UNAVAILABLE,
        ),
        (rf"toomanyrequests|too many requests|rate limit|{_CODE}429\b", ErrorReason.RATE_LIMITED),
        (
            r"invalid reference format|invalid tag format|invalid repository name|"
            r"repository name must|cannot be used with digest|must be lowercase",
            ErrorReason.INVALID_REFERENCE,
        ),
        # dockerd maps a registry's "denied" on pull to errdefs.NotFound and writes
        # "pull access denied for x, repository does not exist or may require
        # 'docker login'". The registry did answer and a retry cannot help; NotFound
        # (whose suggestion also names credentials) is what docker itself decided.
        # A "denied" on push (insufficient scope) has no such prefix: AuthFailed.
        (r"pull access denied|repository does not exist", ErrorReason.NOT_FOUND),
        (
            r"unauthorized|authentication required|no basic auth credentials|"
            rf"incorrect username or password|{_CODE}401\b",
            ErrorReason.AUTH_FAILED,
        ),
        (rf"(?<!permission )denied|insufficient_scope|{_CODE}403\b", ErrorReason.AUTH_FAILED),
        (
            r"manifest unknown|manifest for .* not found|not found|no such image|"
            r"name unknown|does not exist",
            ErrorReason.NOT_FOUND,
        ),
        (r"digest mismatch|digest did not match|does not match", ErrorReason.DIGEST_MISMATCH),
        # Go's HTTP client and dialer timing out is the network, not spec.timeoutSeconds.
        (r"client\.timeout exceeded|i/o timeout|tls handshake timeout", ErrorReason.NETWORK),
        (r"timeout|timed out|deadline exceeded", ErrorReason.TIMEOUT),
        (
            rf"connection refused|connection reset|{_CODE}50[0234]\b|service unavailable|"
            r"bad gateway|unexpected eof|broken pipe",
            ErrorReason.REGISTRY_UNAVAILABLE,
        ),
        (
            r"no such host|name resolution|network is unreachable|no route to host|dial tcp|"
            r"tls:|x509|certificate|http response to https client",
            ErrorReason.NETWORK,
        ),
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
