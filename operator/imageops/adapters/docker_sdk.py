"""ImageBackend on the Docker Engine API through the docker SDK (docker-py 7.1).

docker-py has three traps this module works around:

* errors a pull or push meets after it started arrive as ``errorDetail`` items
  of the progress stream, not as exceptions, so every item is checked;
* a broken connection mid-stream surfaces as a requests/urllib3 exception;
* ``pull``/``push`` block without a read timeout, so the streaming request is
  made here on a dedicated client whose sockets a :class:`CancelToken` can shut
  from another thread, which wakes the blocked read at once.

No ambient credentials: without a :class:`RegistryAuth` an empty
``X-Registry-Auth`` is sent rather than whatever ``~/.docker/config.json`` holds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import docker
import docker.auth
import docker.constants
import docker.errors
import docker.utils
import requests.exceptions
import urllib3.exceptions

from imageops.adapters.progress import StreamReader, cancelled_error, push_target, repo_digest
from imageops.models.common import ErrorReason
from imageops.services.backend import (
    CancelToken,
    ImageInfo,
    ProgressCallback,
    PullResult,
    PushResult,
    RegistryAuth,
    require_image,
)
from imageops.services.errors import OperationError, from_message
from imageops.services.reference import parse_reference

_STATUS_DEFAULTS: dict[int, ErrorReason] = {
    400: ErrorReason.INVALID_REFERENCE,
    401: ErrorReason.AUTH_FAILED,
    403: ErrorReason.AUTH_FAILED,
    404: ErrorReason.NOT_FOUND,
    409: ErrorReason.CONFLICT,
    429: ErrorReason.RATE_LIMITED,
}
_STREAM_BROKEN = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    docker.errors.StreamParseError,
)


def api_error(exc: docker.errors.APIError) -> OperationError:
    """Classify an error response of the Engine API by its text, then by its HTTP status."""
    message = str(exc.explanation or exc)
    status = exc.status_code or 0
    default = _STATUS_DEFAULTS.get(status)
    if default is None and status >= 500:
        default = ErrorReason.UNKNOWN
    return from_message(message, default=default)


def auth_header(auth: RegistryAuth | None) -> bytes:
    """X-Registry-Auth for ``auth``; an empty one without credentials (dockerd wants the header)."""
    if auth is None:
        return bytes(docker.auth.encode_header({}))
    config = {"username": auth.username, "password": auth.password, "serveraddress": auth.registry}
    return bytes(docker.auth.encode_header(config))


class _SocketCloser:
    """Shuts down the sockets one dedicated APIClient uses, so a blocked read returns.

    Closing a requests response from another thread does not wake a thread
    blocked in recv(); shutdown() does. The connections are recorded as the
    client's pools hand them out, which also covers the wait before response
    headers (dockerd sends none until the registry answered the manifest).
    """

    def __init__(self, api: Any) -> None:
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._armed = True
        self._closed = False
        for adapter in {id(a): a for a in api.adapters.values()}.values():
            self._wrap_adapter(adapter)

    def _wrap_adapter(self, adapter: Any) -> None:
        get_connection = adapter.get_connection_with_tls_context

        def tracked(*args: Any, **kwargs: Any) -> Any:
            pool = get_connection(*args, **kwargs)
            self._wrap_pool(pool)
            return pool

        adapter.get_connection_with_tls_context = tracked

    def _wrap_pool(self, pool: Any) -> None:
        if getattr(pool, "_imageops_tracked", False):
            return
        get_conn = pool._get_conn

        def tracked(*args: Any, **kwargs: Any) -> Any:
            conn = get_conn(*args, **kwargs)
            with self._lock:
                if self._closed:
                    # Cancelled before the request got its connection: do not start it.
                    raise ConnectionAbortedError("cancelled")
                self._conns.append(conn)
            return conn

        pool._get_conn = tracked
        pool._imageops_tracked = True

    def close(self) -> None:
        """Shut every recorded socket (both directions)."""
        with self._lock:
            self._closed = True
            conns = list(self._conns) if self._armed else []
        for conn in conns:
            sock = getattr(conn, "sock", None)
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    def disarm(self) -> None:
        """Stop acting on cancel: the call is over and its sockets may be reused or gone."""
        with self._lock:
            self._armed = False
            self._conns.clear()


class DockerSdkBackend:
    """ImageBackend through the docker SDK's low-level APIClient."""

    name = "sdk"

    def __init__(self, base_url: str | None = None, *, timeout: float = 60.0) -> None:
        """Talk to ``base_url`` (e.g. ``unix:///var/run/docker.sock``), else to DOCKER_HOST.

        ``timeout`` bounds every call except the pull and push streams, which
        only a CancelToken stops.
        """
        self._kwargs: dict[str, Any] = (
            {"base_url": base_url} if base_url else dict(docker.utils.kwargs_from_env())
        )
        self._kwargs.setdefault("base_url", None)
        self._timeout = timeout
        self._api: Any = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """Where the daemon is reached."""
        return str(self._kwargs["base_url"] or docker.constants.DEFAULT_UNIX_SOCKET)

    def _client(self) -> Any:
        with self._lock:
            if self._api is None:
                try:
                    self._api = docker.APIClient(
                        **self._kwargs, version="auto", timeout=self._timeout
                    )
                except docker.errors.DockerException as exc:
                    raise self._daemon_error(exc) from exc
                if self.base_url.startswith(("unix://", "/", "http+unix://")):
                    # No proxy or .netrc applies to a local socket; requests would still
                    # scan the environment and read ~/.netrc on every call (a tenth of
                    # the agent's CPU in a burst of Tags).
                    self._api.trust_env = False
            return self._api

    def _daemon_error(self, exc: BaseException) -> OperationError:
        message = f"cannot reach the Docker daemon at {self.base_url}: {exc}"
        return OperationError(ErrorReason.DAEMON_UNAVAILABLE, message)

    @contextlib.contextmanager
    def _calling(self, on_timeout: ErrorReason = ErrorReason.DAEMON_UNAVAILABLE) -> Iterator[Any]:
        """The shared client, with its failures turned into OperationError.

        ``on_timeout`` is what our own read timeout means: a stuck daemon, or
        (when the daemon waits on a registry) a stuck registry. It is not
        the operation's deadline, so never Timeout.
        """
        api = self._client()
        try:
            yield api
        except OperationError:
            raise
        except docker.errors.InvalidRepository as exc:
            raise OperationError(ErrorReason.INVALID_REFERENCE, str(exc)) from exc
        except docker.errors.APIError as exc:
            raise api_error(exc) from exc
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
            message = f"no answer from the Docker daemon within {self._timeout}s: {exc}"
            raise OperationError(on_timeout, message) from exc
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            raise self._daemon_error(exc) from exc

    def ping(self) -> None:
        """Raise OperationError(DaemonUnavailable) unless the daemon answers."""
        with self._calling() as api:
            api.ping()

    def inspect(self, ref: str) -> ImageInfo | None:
        """The local image named ``ref``, or None when there is none."""
        with self._calling() as api:
            try:
                data = api.inspect_image(ref)
            except docker.errors.ImageNotFound:
                return None
        return ImageInfo.from_inspect(data)

    def pull(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        platform: str | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PullResult:
        """Pull ``ref``; errors inside the progress stream raise OperationError."""
        parsed = parse_reference(ref)
        # dockerd takes a digest in the tag parameter.
        tag = parsed.digest or parsed.tag or "latest"
        params = {"fromImage": parsed.name, "tag": tag}
        if platform:
            params["platform"] = platform
        reader = StreamReader("pull", on_progress)
        self._stream("pull", ("/images/create",), params, auth, reader, cancel)
        image = require_image(self, str(parsed))
        digest = reader.digest or repo_digest(image, parsed)
        return PullResult(digest=digest, image=image, cache_hit=reader.tracker.cache_hit)

    def push(
        self,
        ref: str,
        *,
        auth: RegistryAuth | None,
        on_progress: ProgressCallback,
        cancel: CancelToken,
    ) -> PushResult:
        """Push ``ref``; the digest comes from the aux item, the status line, then RepoDigests."""
        parsed = parse_reference(ref)
        target = push_target(parsed)
        params = {"tag": target.rpartition(":")[2]}
        reader = StreamReader("push", on_progress)
        self._stream("push", ("/images/{0}/push", parsed.name), params, auth, reader, cancel)
        if reader.digest:
            return PushResult(digest=reader.digest, size_bytes=reader.size)
        digest = repo_digest(require_image(self, target), parsed)
        if digest is None:
            raise OperationError(ErrorReason.UNKNOWN, f"push of {ref} reported no digest")
        return PushResult(digest=digest)

    def _stream(
        self,
        what: str,
        path: tuple[str, ...],
        params: dict[str, str],
        auth: RegistryAuth | None,
        reader: StreamReader,
        cancel: CancelToken,
    ) -> None:
        """POST a streaming request on a dedicated client and feed its items to ``reader``."""
        if cancel.cancelled:
            raise cancelled_error(cancel, what)
        version = self._client().api_version
        api = docker.APIClient(**self._kwargs, version=version, timeout=self._timeout)
        closer = _SocketCloser(api)
        cancel.on_cancel(closer.close)
        try:
            self._read_stream(api, api._url(*path), params, auth, reader, cancel, what)
        finally:
            closer.disarm()
            api.close()

    def _read_stream(
        self,
        api: Any,
        url: str,
        params: dict[str, str],
        auth: RegistryAuth | None,
        reader: StreamReader,
        cancel: CancelToken,
        what: str,
    ) -> None:
        headers = {"X-Registry-Auth": auth_header(auth)}
        started = False
        try:
            response = api._post(url, params=params, headers=headers, stream=True, timeout=None)
            with response:
                api._raise_for_status(response)
                started = True
                for item in api._stream_helper(response, decode=True):
                    if cancel.cancelled:
                        break
                    reader.feed(item)
        except OperationError:
            raise
        except Exception as exc:
            if cancel.cancelled:
                raise cancelled_error(cancel, what) from exc
            raise self._stream_failure(exc, what, started) from exc
        if cancel.cancelled:
            raise cancelled_error(cancel, what)
        # A pull always ends with a "Status:" line; a push stream that ended cleanly
        # without a digest is resolved through RepoDigests by the caller.
        if what == "pull" and not reader.finished:
            raise self._stream_failure(None, what, started)

    def _stream_failure(self, exc: Exception | None, what: str, started: bool) -> OperationError:
        """Classify a stream that failed or ended early: the daemon, the link, or the request."""
        if isinstance(exc, docker.errors.APIError):
            return api_error(exc)
        if isinstance(exc, docker.errors.InvalidRepository):
            return OperationError(ErrorReason.INVALID_REFERENCE, str(exc))
        if exc is not None and not isinstance(exc, _STREAM_BROKEN):
            return OperationError(ErrorReason.UNKNOWN, f"{what}: {type(exc).__name__}: {exc}")
        if not started and exc is not None:
            return self._daemon_error(exc)
        # The stream broke or ended without its final status: the daemon died or the link did.
        try:
            self.ping()
        except OperationError as down:
            return down
        detail = f": {exc}" if exc is not None else ""
        message = f"{what}: the stream from the Docker daemon broke{detail}"
        return OperationError(ErrorReason.NETWORK, message)

    def tag(self, source: str, target: str) -> None:
        """Point ``target`` at the image ``source`` names (moves an existing tag)."""
        parsed = parse_reference(target)
        with self._calling() as api:
            api.tag(source, parsed.name, push_target(parsed).rpartition(":")[2])

    def remove(self, ref: str) -> None:
        """Untag ``ref`` (the image itself stays if other names use it); missing is not an error."""
        with self._calling() as api:
            try:
                api.remove_image(ref, noprune=True)
            except docker.errors.ImageNotFound:
                return

    def registry_digest(self, ref: str, *, auth: RegistryAuth | None) -> str:
        """Ask the registry (Docker distribution endpoint) which digest ``ref`` resolves to."""
        config: dict[str, str] = {}
        if auth is not None:
            config = {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.registry,
            }
        with self._calling(on_timeout=ErrorReason.REGISTRY_UNAVAILABLE) as api:
            data = api.inspect_distribution(ref, auth_config=config)
        digest = (data.get("Descriptor") or {}).get("digest")
        if not isinstance(digest, str) or not digest:
            message = f"the distribution endpoint gave no digest for {ref}"
            raise OperationError(ErrorReason.UNKNOWN, message)
        return digest

    def close(self) -> None:
        """Release the shared client's connections."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None
