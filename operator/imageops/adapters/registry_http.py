"""Asking a registry which digest a reference resolves to, over its v2 HTTP API.

The command-line backend has no portable command for this (``docker manifest``
and ``buildx imagetools`` are optional plugins), so it asks the registry
directly: ``HEAD /v2/<repository>/manifests/<tag or digest>`` answered with a
``Docker-Content-Digest`` header, after a Basic or Bearer-token challenge when
the registry asks for one. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from http.client import HTTPResponse

from imageops.models.common import ErrorReason
from imageops.services.backend import RegistryAuth
from imageops.services.errors import OperationError, from_message
from imageops.services.reference import DEFAULT_REGISTRY, ImageRef, parse_reference

# Docker Hub's name in references is not the host serving its v2 API.
_DOCKER_HUB_API = "registry-1.docker.io"
# Index and list types first: the digest of a multi-platform image is its index's.
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
_DIGEST_RE = re.compile(r"^[a-z0-9]+:[a-f0-9]{32,}$")
_STATUS_TEXT: dict[int, str] = {
    401: "unauthorized: authentication required",
    403: "denied: requested access to the resource is denied",
    404: "manifest unknown",
    429: "toomanyrequests",
}
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_STATUS_REASONS: dict[int, ErrorReason] = {
    400: ErrorReason.INVALID_REFERENCE,
    401: ErrorReason.AUTH_FAILED,
    403: ErrorReason.AUTH_FAILED,
    404: ErrorReason.NOT_FOUND,
    429: ErrorReason.RATE_LIMITED,
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (with or without port) is this machine, which Docker treats as insecure."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """Resolves references to manifest digests against registries' v2 API."""

    def __init__(self, *, timeout: float = 30.0, insecure_registries: tuple[str, ...] = ()) -> None:
        self._timeout = timeout
        # Like dockerd: loopback and listed registries may fall back to plain HTTP.
        self._insecure = insecure_registries

    def manifest_digest(self, ref: str, auth: RegistryAuth | None = None) -> str:
        """The digest the registry serves for ``ref`` (index digest for multi-platform images)."""
        parsed = parse_reference(ref)
        host = _DOCKER_HUB_API if parsed.registry == DEFAULT_REGISTRY else parsed.registry
        reference = parsed.digest or parsed.tag or "latest"
        path = f"/v2/{parsed.repository}/manifests/{reference}"
        tls_error = ""
        for scheme in self._schemes(parsed.registry):
            try:
                return self._resolve(f"{scheme}://{host}{path}", parsed, auth)
            except _TryPlainHttp as exc:
                tls_error = str(exc)
        raise OperationError(ErrorReason.NETWORK, f"{host}: tls: {tls_error}")

    def api_host(self, registry: str) -> str:
        """The host serving ``registry``'s v2 API (Docker Hub's differs from its name)."""
        return _DOCKER_HUB_API if registry == DEFAULT_REGISTRY else registry

    def schemes(self, registry: str) -> tuple[str, ...]:
        """URL schemes to try for ``registry``: https, then http for loopback or insecure ones."""
        return self._schemes(registry)

    def authorization(
        self, headers: Mapping[str, str], parsed: ImageRef, auth: RegistryAuth | None
    ) -> str:
        """The Authorization header answering a 401's challenge (Basic, or a Bearer token)."""
        return self._authorization(headers, parsed, auth)

    def _schemes(self, registry: str) -> tuple[str, ...]:
        if is_loopback(registry) or registry in self._insecure:
            return ("https", "http")
        return ("https",)

    def _resolve(self, url: str, parsed: ImageRef, auth: RegistryAuth | None) -> str:
        headers = {"Accept": MANIFEST_ACCEPT}
        status, response_headers, body = self._request("HEAD", url, headers)
        if status == 401:
            headers["Authorization"] = self._authorization(response_headers, parsed, auth)
            status, response_headers, body = self._request("HEAD", url, headers)
        if status == 200 and _DIGEST_RE.match(response_headers.get("docker-content-digest", "")):
            return response_headers["docker-content-digest"]
        if status == 200:
            # Some registries leave the header out of HEAD: hash the manifest itself.
            status, response_headers, body = self._request("GET", url, headers)
            if status == 200:
                return "sha256:" + hashlib.sha256(body).hexdigest()
        raise _status_error(status, body, url)

    def _authorization(
        self, headers: Mapping[str, str], parsed: ImageRef, auth: RegistryAuth | None
    ) -> str:
        challenge = headers.get("www-authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if auth is None:
                raise OperationError(ErrorReason.AUTH_FAILED, "no basic auth credentials")
            return "Basic " + _basic(auth)
        if scheme == "bearer":
            return "Bearer " + self._token(challenge, parsed, auth)
        raise OperationError(
            ErrorReason.AUTH_FAILED, f"unauthorized: unsupported challenge {challenge!r}"
        )

    def _token(self, challenge: str, parsed: ImageRef, auth: RegistryAuth | None) -> str:
        params = dict(_CHALLENGE_PARAM_RE.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise OperationError(ErrorReason.AUTH_FAILED, f"unauthorized: token realm {realm!r}")
        params.setdefault("scope", f"repository:{parsed.repository}:pull")
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        headers = {"Authorization": "Basic " + _basic(auth)} if auth else {}
        status, _, body = self._request("GET", url, headers)
        if status != 200:
            raise _status_error(status, body, url)
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise OperationError(ErrorReason.AUTH_FAILED, f"unauthorized: no token from {realm}")
        return token

    def _request(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(url, method=method, headers=dict(headers))
        try:
            response: HTTPResponse = urllib.request.urlopen(request, timeout=self._timeout)
            with response:
                return response.status, _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, _lower(err.headers.items()), err.read()
        except urllib.error.URLError as err:
            raise _connection_error(url, err.reason) from err
        except (TimeoutError, OSError) as err:
            raise _connection_error(url, err) from err


class _TryPlainHttp(Exception):
    """The registry does not speak TLS; an insecure registry may be retried over HTTP."""


def _connection_error(url: str, reason: object) -> Exception:
    if isinstance(reason, ssl.SSLCertVerificationError):
        # It speaks TLS with a certificate we do not trust: plain HTTP would not help.
        return OperationError(ErrorReason.NETWORK, f"{url}: x509: {reason}")
    if isinstance(reason, ssl.SSLError) and url.startswith("https://"):
        return _TryPlainHttp(str(reason))
    if isinstance(reason, TimeoutError):
        # The registry accepted the connection but does not answer: hung or overloaded.
        return OperationError(ErrorReason.REGISTRY_UNAVAILABLE, f"{url}: no answer: {reason}")
    if isinstance(reason, ConnectionRefusedError):
        return OperationError(ErrorReason.REGISTRY_UNAVAILABLE, f"{url}: connection refused")
    return from_message(f"{url}: {reason}", default=ErrorReason.NETWORK)


def _status_error(status: int, body: bytes, url: str) -> OperationError:
    text = body.decode("utf-8", "replace").strip()[:500]
    # HEAD answers have no body: name the status the way registries word it.
    text = text or _STATUS_TEXT.get(status, "")
    message = f"{url}: HTTP {status}" + (f": {text}" if text else "")
    if status >= 500:
        return OperationError(ErrorReason.REGISTRY_UNAVAILABLE, message)
    return OperationError(_STATUS_REASONS.get(status, ErrorReason.UNKNOWN), message)


def _basic(auth: RegistryAuth | None) -> str:
    if auth is None:
        return ""
    return base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()


def _lower(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {key.lower(): value for key, value in items}
