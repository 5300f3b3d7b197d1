"""Pushing blobs and manifests over the distribution HTTP API (and fetching blobs back).

Used by the containerd backend, whose content store holds an image's
manifests, config and (unless discarded after unpacking) layers: each blob is
checked with HEAD, mounted from another repository of the same registry when
possible, else uploaded (POST, then one streamed PUT); the manifest goes last
with its exact bytes, so the digest the registry serves is the local one.
http.client is used directly: one connection per session, whose socket a
CancelToken can shut from another thread.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

from imageops.adapters.registry_http import MANIFEST_ACCEPT, RegistryClient
from imageops.models.common import ErrorReason
from imageops.services.backend import CancelToken, RegistryAuth
from imageops.services.errors import OperationError, from_message
from imageops.services.reference import ImageRef

CHUNK = 1024 * 1024


class RegistrySession:
    """Requests to one repository of one registry, authorised after its first challenge."""

    def __init__(
        self,
        client: RegistryClient,
        ref: ImageRef,
        auth: RegistryAuth | None,
        cancel: CancelToken,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.ref = ref
        self._client = client
        self._auth = auth if auth is not None and auth.registry == ref.registry else None
        self._cancel = cancel
        self._timeout = timeout
        self._host = client.api_host(ref.registry)
        self._authorization: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._scheme = ""
        self._probing: socket.socket | None = None
        cancel.on_cancel(self.close)

    @property
    def repo_path(self) -> str:
        """``/v2/<repository>``."""
        return f"/v2/{self.ref.repository}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is not None:
            return self._conn
        error: Exception | None = None
        for scheme in self._client.schemes(self.ref.registry):
            if self._cancel.cancelled:
                # close() ran already: a connection made now would never be shut.
                raise self._network_error(ConnectionAbortedError("cancelled"))
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = http.client.HTTPSConnection(self._host, timeout=self._timeout)
            else:
                conn = http.client.HTTPConnection(self._host, timeout=self._timeout)
            try:
                conn.sock = self._open_socket(conn, scheme)
                if scheme == "https":
                    # A plain-HTTP registry fails here, not at connect: probe once.
                    conn.request("GET", "/v2/")
                    conn.getresponse().read()
            except ssl.SSLError as exc:
                conn.close()
                if self._cancel.cancelled:
                    raise self._network_error(exc) from exc
                error = exc
                continue
            except OSError as exc:
                conn.close()
                raise self._network_error(exc) from exc
            self._conn, self._scheme = conn, scheme
            if self._cancel.cancelled:
                self.close()
                raise self._network_error(ConnectionAbortedError("cancelled"))
            return conn
        raise OperationError(ErrorReason.NETWORK, f"{self._host}: tls: {error}")

    def _open_socket(self, conn: http.client.HTTPConnection, scheme: str) -> socket.socket:
        """Connect (and for https shake hands) on a socket close() can shut at any point.

        The TLS layer takes over the socket's file descriptor, so a duplicate
        of it is kept: shutting the duplicate wakes a stalled handshake too.
        """
        raw = socket.create_connection((conn.host, conn.port), timeout=self._timeout)
        self._probing = raw.dup()
        if self._cancel.cancelled:
            raw.close()
            raise ConnectionAbortedError("cancelled")
        if scheme != "https":
            return raw
        return ssl.create_default_context().wrap_socket(raw, server_hostname=conn.host)

    def _network_error(self, exc: BaseException) -> OperationError:
        if self._cancel.cancelled:
            what = "timeout" if self._cancel.reason == "timeout" else "cancelled"
            reason = ErrorReason.TIMEOUT if what == "timeout" else ErrorReason.CANCELLED
            return OperationError(reason, f"push to {self._host} stopped: {self._cancel.reason}")
        if isinstance(exc, ConnectionRefusedError):
            return OperationError(
                ErrorReason.REGISTRY_UNAVAILABLE, f"{self._host}: connection refused"
            )
        if isinstance(exc, TimeoutError | socket.timeout):
            return OperationError(ErrorReason.REGISTRY_UNAVAILABLE, f"{self._host}: no answer")
        return from_message(f"{self._host}: {exc}", default=ErrorReason.NETWORK)

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        *,
        length: int | None = None,
    ) -> http.client.HTTPResponse:
        """One request; a 401 is answered once with the challenge's credentials (bytes bodies)."""
        for attempt in range(2):
            conn = self._connect()
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            if length is not None:
                sent["Content-Length"] = str(length)
            elif body is None and method in ("PUT", "POST", "PATCH"):
                sent["Content-Length"] = "0"
            try:
                conn.request(method, url, body=body, headers=sent)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._network_error(exc) from exc
            if response.status != 401 or attempt or self._authorization:
                return response
            challenge = {k.lower(): v for k, v in response.getheaders()}
            response.read()
            self._authorization = self._client.authorization(challenge, self.ref, self._auth)
            if body is not None and not isinstance(body, bytes):
                raise OperationError(ErrorReason.AUTH_FAILED, f"{url}: unauthorized mid-upload")
        raise AssertionError("unreachable")

    def checked(self, response: http.client.HTTPResponse, *ok: int) -> bytes:
        """The body of ``response``; an OperationError unless its status is in ``ok``."""
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from exc
        if response.status in ok:
            return body
        text = body.decode("utf-8", "replace").strip()[:500]
        message = f"{self._host}{self.repo_path}: HTTP {response.status}: {text}"
        if response.status >= 500:
            return _raise(OperationError(ErrorReason.REGISTRY_UNAVAILABLE, message))
        defaults = {
            401: ErrorReason.AUTH_FAILED,
            403: ErrorReason.AUTH_FAILED,
            404: ErrorReason.NOT_FOUND,
            429: ErrorReason.RATE_LIMITED,
        }
        return _raise(from_message(message, default=defaults.get(response.status)))

    def has_blob(self, digest: str) -> bool:
        """Whether the repository already has ``digest``."""
        response = self.request("HEAD", f"{self.repo_path}/blobs/{digest}")
        self.checked(response, 200, 404)
        return response.status == 200

    def mount_or_start(self, digest: str, source_repository: str | None) -> str | None:
        """Mount ``digest`` from ``source_repository`` (None when mounted) or start an upload."""
        query = ""
        if source_repository:
            query = "?" + urllib.parse.urlencode({"mount": digest, "from": source_repository})
        response = self.request("POST", f"{self.repo_path}/blobs/uploads/{query}")
        self.checked(response, 201, 202)
        if response.status == 201:
            return None
        location = response.getheader("Location") or ""
        if not location:
            raise OperationError(ErrorReason.UNKNOWN, f"{self._host}: upload without a Location")
        return location

    def upload(self, location: str, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """Finish the upload at ``location`` with one streamed PUT of ``size`` bytes."""
        parsed = urllib.parse.urlsplit(location)
        path = parsed.path + ("?" + parsed.query if parsed.query else "")
        separator = "&" if parsed.query else "?"
        url = f"{path}{separator}{urllib.parse.urlencode({'digest': digest})}"
        headers = {"Content-Type": "application/octet-stream"}
        self.checked(self.request("PUT", url, headers, chunks, length=size), 201)

    def put_manifest(self, reference: str, media_type: str, data: bytes) -> str:
        """PUT a manifest; the digest the registry answers with."""
        url = f"{self.repo_path}/manifests/{reference}"
        response = self.request("PUT", url, {"Content-Type": media_type}, data, length=len(data))
        self.checked(response, 201, 200)
        return str(response.getheader("Docker-Content-Digest") or "")

    def manifest_chunks(self, digest: str) -> Iterator[bytes]:
        """The manifest ``digest`` from this repository, as stored."""
        response = self.request(
            "GET", f"{self.repo_path}/manifests/{digest}", {"Accept": MANIFEST_ACCEPT}
        )
        yield self.checked(response, 200)

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """Stream the blob ``digest`` from this repository (redirects not followed: local)."""
        response = self.request("GET", f"{self.repo_path}/blobs/{digest}")
        if response.status != 200:
            self.checked(response, 200)
        try:
            while chunk := response.read(CHUNK):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._network_error(exc) from exc

    def close(self) -> None:
        """Shut the connection (wakes a thread blocked on it)."""
        conn, self._conn = self._conn, None
        probing, self._probing = self._probing, None
        sock: Any = getattr(conn, "sock", None)
        for each in (sock, probing):
            with contextlib.suppress(OSError):
                if each is not None:
                    each.shutdown(socket.SHUT_RDWR)
        if probing is not None:
            probing.close()
        if conn is not None:
            conn.close()


def _raise(error: OperationError) -> bytes:
    raise error
