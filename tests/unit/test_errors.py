"""Classification of real Docker daemon, docker CLI and registry error messages."""

from __future__ import annotations

import pytest

from imageops.models.common import ErrorReason
from imageops.services.errors import (
    RETRYABLE,
    SUGGESTIONS,
    OperationError,
    classify_message,
    from_message,
)

R = ErrorReason

# Messages as dockerd, the docker CLI, docker-py and distribution write them.
REAL_MESSAGES: list[tuple[str, ErrorReason]] = [
    ("unauthorized: authentication required", R.AUTH_FAILED),
    ('Head "http://127.0.0.1:5001/v2/x/manifests/1": no basic auth credentials', R.AUTH_FAILED),
    ("no basic auth credentials", R.AUTH_FAILED),
    ("unauthorized: incorrect username or password", R.AUTH_FAILED),
    # Push without the scope: the registry's own "denied", no "pull access" prefix.
    ("denied: requested access to the resource is denied", R.AUTH_FAILED),
    ("insufficient_scope: authorization failed", R.AUTH_FAILED),
    (
        "manifest for 127.0.0.1:5000/x:1 not found: manifest unknown: manifest unknown",
        R.NOT_FOUND,
    ),
    # dockerd turns a registry "denied" on pull into errdefs.NotFound: NotFound here too.
    (
        "pull access denied for x, repository does not exist or may require 'docker login'",
        R.NOT_FOUND,
    ),
    (
        "Error response from daemon: pull access denied for nosuch, repository does not exist "
        "or may require 'docker login': denied: requested access to the resource is denied",
        R.NOT_FOUND,
    ),
    ("repository x not found: name unknown: repository name not known to registry", R.NOT_FOUND),
    ("Error response from daemon: No such image: 127.0.0.1:5000/x:1", R.NOT_FOUND),
    ("invalid reference format", R.INVALID_REFERENCE),
    (
        "invalid reference format: repository name (library/Foo) must be lowercase",
        R.INVALID_REFERENCE,
    ),
    (
        'Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
        R.REGISTRY_UNAVAILABLE,
    ),
    ("received unexpected HTTP status: 503 Service Unavailable", R.REGISTRY_UNAVAILABLE),
    ("received unexpected HTTP status: 502 Bad Gateway", R.REGISTRY_UNAVAILABLE),
    ("received unexpected HTTP status: 500 Internal Server Error", R.REGISTRY_UNAVAILABLE),
    ("toomanyrequests: You have reached your pull rate limit", R.RATE_LIMITED),
    ("received unexpected HTTP status: 429 Too Many Requests", R.RATE_LIMITED),
    ("write /var/lib/docker/tmp/x: no space left on device", R.DISK_FULL),
    (
        "net/http: request canceled while waiting for connection "
        "(Client.Timeout exceeded while awaiting headers)",
        R.NETWORK,
    ),
    ('Get "https://10.0.0.1:443/v2/": dial tcp 10.0.0.1:443: i/o timeout', R.NETWORK),
    ('Get "https://r.example/v2/": net/http: TLS handshake timeout', R.NETWORK),
    ("dial tcp: lookup nosuch.invalid: no such host", R.NETWORK),
    (
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?",
        R.DAEMON_UNAVAILABLE,
    ),
    (
        "permission denied while trying to connect to the Docker daemon socket at "
        "unix:///var/run/docker.sock: dial unix /var/run/docker.sock: connect: permission denied",
        R.DAEMON_UNAVAILABLE,
    ),
    (
        "Error while fetching server API version: ('Connection aborted.', "
        "FileNotFoundError(2, 'No such file or directory'))",
        R.DAEMON_UNAVAILABLE,
    ),
    (
        'Get "https://127.0.0.2:5000/v2/": http: server gave HTTP response to HTTPS client',
        R.NETWORK,
    ),
    ("x509: certificate signed by unknown authority", R.NETWORK),
    ("context deadline exceeded", R.TIMEOUT),
    ("digest mismatch", R.DIGEST_MISMATCH),
    ("something nobody has seen before", R.UNKNOWN),
    ("", R.UNKNOWN),
]


@pytest.mark.parametrize(("message", "reason"), REAL_MESSAGES)
def test_real_messages_classify(message: str, reason: ErrorReason) -> None:
    assert classify_message(message) is reason


@pytest.mark.parametrize(("message", "reason"), REAL_MESSAGES)
def test_classification_ignores_case(message: str, reason: ErrorReason) -> None:
    assert classify_message(message.upper()) is reason


@pytest.mark.parametrize(
    "message",
    [
        # Status-code look-alikes inside ports and tags must not decide the reason.
        "manifest for 127.0.0.1:5000/x:429 not found: manifest unknown: manifest unknown",
        "manifest for 127.0.0.1:401/x:1 not found: manifest unknown: manifest unknown",
        "manifest for 127.0.0.1:5000/x:403 not found: manifest unknown: manifest unknown",
    ],
)
def test_numbers_in_references_are_not_status_codes(message: str) -> None:
    assert classify_message(message) is R.NOT_FOUND


def test_status_codes_in_prose_still_count() -> None:
    assert classify_message("unexpected status code 401") is R.AUTH_FAILED
    assert classify_message("error parsing HTTP 403 response body") is R.AUTH_FAILED
    assert classify_message("unexpected status code 504") is R.REGISTRY_UNAVAILABLE


def test_local_permission_denied_is_not_an_auth_failure() -> None:
    message = "open /var/lib/docker/image/overlay2/repositories.json: permission denied"
    assert classify_message(message) is not R.AUTH_FAILED


def test_retryable_set() -> None:
    assert {
        R.NETWORK,
        R.REGISTRY_UNAVAILABLE,
        R.RATE_LIMITED,
        R.TIMEOUT,
        R.DAEMON_UNAVAILABLE,
        R.UNKNOWN,
    } == RETRYABLE


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_every_reason_has_a_suggestion(reason: ErrorReason) -> None:
    suggestion = SUGGESTIONS[reason]
    # ErrorInfo.suggestion is limited to 1024 characters by the CRD.
    assert suggestion.strip()
    assert len(suggestion) <= 1024


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_to_info(reason: ErrorReason) -> None:
    info = OperationError(reason, "x" * 5000).to_info()
    assert info.reason == reason
    assert len(info.message) == 4096
    assert info.retryable is (reason in RETRYABLE)
    assert info.suggestion == SUGGESTIONS[reason]


def test_operation_error_str_and_retryable() -> None:
    error = OperationError(R.RATE_LIMITED, "slow down")
    assert str(error) == "RateLimited: slow down"
    assert error.retryable
    assert not OperationError(R.AUTH_FAILED, "no").retryable


def test_from_message_classifies_and_strips() -> None:
    error = from_message("  unauthorized: authentication required\n")
    assert error.reason is R.AUTH_FAILED
    assert error.message == "unauthorized: authentication required"


def test_from_message_default_only_replaces_unknown() -> None:
    assert from_message("weird", default=R.NOT_FOUND).reason is R.NOT_FOUND
    assert from_message("no space left on device", default=R.NOT_FOUND).reason is R.DISK_FULL
    assert from_message("weird").reason is R.UNKNOWN


def test_from_message_empty_message_falls_back_to_reason() -> None:
    assert from_message("   ", default=R.TIMEOUT).message == "Timeout"
